"""Provider clients (Baidu AI Cloud, WeBank/Tencent FaceID) and the one rule that picks an engine.

Each provider module owns its ``providers.<name>`` config schema (``SCHEMA``) and a factory
``from_config(config, tokens)`` that returns a client, or None when its credentials are not configured.
"""

from __future__ import annotations

from typing import Any

from core.errors import ProviderMisconfigured

#: provider name -> module; each module has ``SCHEMA`` and a client class with ``from_config``
PROVIDERS = {"baidu": "core.providers.baidu", "webank": "core.providers.webank"}


def choose_engine(services: Any, choice: str, where: str, provider: str = "baidu") -> Any:
    """What ``engine: auto | local | <provider>`` means now, the same for every plugin: the provider's
    client, or None for the local engine.

    ``auto`` is the provider when its keys are configured, else local; naming the provider without its
    keys raises :class:`ProviderMisconfigured` (the user is told, the admins alerted). ``where`` is the
    config key, for that message.
    """
    if choice == "local":
        return None
    client = services.provider(provider)
    if client is None and choice == provider:
        raise ProviderMisconfigured(f"{where} is {provider}, but providers.{provider} has no keys")
    return client

"""Provider clients (Baidu AI Cloud, WeBank/Tencent FaceID H5, Tencent Cloud FaceID API 3.0) and the one rule
that picks an engine.

Each provider module owns its ``providers.<name>`` config schema (``SCHEMA``) and a factory
``from_config(config, tokens)`` that returns a client, or None when its credentials are not configured.
"""

from __future__ import annotations

import importlib
from typing import Any

from core.contract.errors import ProviderMisconfigured
from core.contract.fields import Field

#: provider name -> "module:client class"; the module has ``SCHEMA``, the class ``from_config(config, tokens)``
PROVIDERS = {
    "baidu": "core.providers.baidu:BaiduClient",
    "webank": "core.providers.webank:WebankClient",
    "tencent": "core.providers.tencent:TencentFaceId",
}


def make_client(name: str, config: dict[str, Any], tokens: Any) -> Any:
    """The client of provider ``name`` for the whole validated ``config``, or None when it has no credentials."""
    module, _, cls = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls).from_config(config, tokens)


def capabilities(provider: str) -> frozenset[str]:
    """What provider ``provider``'s client can do (its module's ``CAPABILITIES``: ``ocr``, ``face``, …)."""
    return importlib.import_module(PROVIDERS[provider].partition(":")[0]).CAPABILITIES  # type: ignore[no-any-return]


def choose_engine(services: Any, choice: str, where: str, provider: str = "baidu", *, needs: str = "") -> Any:
    """What ``engine: auto | local | <provider>`` means now, the same for every plugin: the provider's
    client, or None for the local engine.

    ``auto`` is the provider when its keys are configured, else local; naming the provider without its
    keys raises :class:`ProviderMisconfigured` (the user is told, the admins alerted). ``where`` is the
    config key, for that message; ``needs`` the capability the plugin uses (a provider without it is a
    programming error: ``ValueError``).
    """
    if needs and needs not in capabilities(provider):
        raise ValueError(f"{where}: provider {provider} cannot do {needs}")
    if choice == "local":
        return None
    client = services.provider(provider)
    if client is None and choice == provider:
        raise ProviderMisconfigured(f"{where} is {provider}, but providers.{provider} has no keys")
    return client


def schemas() -> dict[str, Field]:
    """``providers.<name>`` → its section's :class:`~core.contract.fields.Field`, from each module's ``SCHEMA``."""
    return {
        name: Field(dict, default={}, schema=importlib.import_module(target.partition(":")[0]).SCHEMA)
        for name, target in PROVIDERS.items()
    }

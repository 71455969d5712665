"""Errors that reach a chat user.

Every error a user may see is a :class:`UserFacingError`. It carries a message *key* into the message
catalogue (``core/contract/locale/<lang>.yaml`` or a plugin's own catalogue) plus its parameters, so the text is
localised where it is shown, and a ``detail`` for the admin's log. Neither may contain a secret, a
token, an ID number or image bytes: ``detail`` is logged as it is.
"""

from __future__ import annotations

from typing import Any

from core.contract.i18n import core_catalogue


class UserFacingError(Exception):
    """An error with a safe, localised message for the chat user and a detail for the log."""

    key = "error.generic"

    def __init__(self, detail: str = "", *, key: str | None = None, **params: Any) -> None:
        self.key = key or self.key
        self.params = params
        self.detail = detail or self.key
        super().__init__(self.detail)

    def user_message(self, lang: str) -> str:
        """The message for the user in ``lang`` (``en`` or ``zh``), from the core catalogue."""
        return core_catalogue().text(lang, self.key, **self.params)


class BadImage(UserFacingError):
    """The image cannot be used (not an image, truncated, too small, too large, …)."""

    key = "error.bad_image"


class ProviderError(UserFacingError):
    """A provider (Baidu, WeBank) refused or failed a call."""

    key = "error.provider"


class ProviderMisconfigured(ProviderError):
    """Credentials or settings are wrong: the admin must act; retrying does not help."""

    key = "error.misconfigured"


class QuotaExhausted(ProviderError):
    """The provider's daily or total quota is used up."""

    key = "error.provider_quota"


class RateLimited(ProviderError):
    """The provider's QPS limit was hit and retries did not get through."""

    key = "error.rate_limited"


class TemporarilyUnavailable(ProviderError):
    """The provider failed (5xx, timeout, garbage) and bounded retries did not help."""

    key = "error.unavailable"


class NoFace(ProviderError):
    """No face was found in an image."""

    key = "error.no_face"

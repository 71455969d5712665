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
    """A provider (Baidu, WeBank) refused or failed a call.

    ``vendor`` names the provider (``"baidu"``, ``"webank"``; empty for a failure that is no vendor's); ``code``
    is the vendor's error code, or a transport name (``"timeout"``, ``"tls"``), for the log and the admin alert.
    Provider clients make them through their :class:`core.providers.errors.Vendor` table.
    """

    key = "error.provider"

    def __init__(
        self,
        detail: str = "",
        *,
        vendor: str = "",
        code: int | str | None = None,
        key: str | None = None,
        **params: Any,
    ) -> None:
        self.vendor = vendor
        self.code = code
        super().__init__(detail, key=key, **params)


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


class ProviderBadImage(ProviderError, BadImage):
    """The provider could not use an image (its format, size or content): a :class:`BadImage` too."""

    key = "error.bad_image"


class FaceQuality(ProviderError):
    """The face is covered, blurred, badly lit, incomplete or failed liveness (the key says which)."""

    key = "error.face_quality"


class BadCallback(ProviderError):
    """A browser callback that is not the provider's: wrong or missing signature, wrong order, missing fields."""

    key = "error.provider_request"

"""A provider's failures as data: each vendor is one :class:`Vendor`, a table from its error codes to the
error kinds of :mod:`core.contract.errors` (the kinds plugins and core catch).

Adding a vendor is one table::

    ERRORS = Vendor("tencent", "Tencent", {"AuthFailure": Rule(ProviderMisconfigured, "check the secret id")})
    raise ERRORS.from_code(code, f"Tencent {what}: {code} ({message})")
    raise ERRORS.error(TemporarilyUnavailable, f"Tencent {what}: HTTP 503", code=503)

Every error made here has its ``detail`` redacted (no key, token or ticket reaches a log), ``vendor`` set and
the vendor's ``code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from core.contract.errors import ProviderError, ProviderMisconfigured, TemporarilyUnavailable
from core.infra.redact import redact

#: A vendor's error code (an int, a string such as OAuth's ``invalid_client``, or none).
Code = int | str | None
E = TypeVar("E", bound=ProviderError)


@dataclass(frozen=True)
class Rule:
    """What one vendor code means: the error ``kind``, a ``hint`` for the admin appended to the detail (a
    ``str.format`` template; :meth:`Vendor.from_code` fills it from its keyword arguments), and a catalogue ``key``
    when the user should read something more precise than the kind's own."""

    kind: type[ProviderError]
    hint: str = ""
    key: str | None = None


@dataclass(frozen=True)
class Vendor:
    """One provider's failures: its name (the errors' ``vendor``) and its code table."""

    name: str
    #: how the details name it ("Baidu")
    label: str
    codes: Mapping[Code, Rule] = field(default_factory=dict)
    #: what a code not in :attr:`codes` means
    default: Rule = Rule(ProviderError)

    def error(self, kind: type[E], detail: str, *, code: Code = None, key: str | None = None, **params: Any) -> E:
        """An error of ``kind`` from this vendor (``detail`` redacted)."""
        return kind(redact(detail), vendor=self.name, code=code, key=key, **params)

    def from_code(self, code: Code, where: str, **facts: Any) -> ProviderError:
        """The error the vendor's ``code`` means; ``where`` says which call answered it (and its log id),
        ``facts`` fill the rule's hint (``retries``, ``endpoint``, …)."""
        rule = self.codes.get(code, self.default)
        detail = f"{where}: {rule.hint.format(**facts)}" if rule.hint else where
        return self.error(rule.kind, detail, code=code, key=rule.key)

    def unanswered(self, exc: requests.RequestException, what: str, *, endpoint: str, retries: int) -> ProviderError:
        """The error a request that got no answer at all means (after ``retries`` transport retries): a TLS
        failure is the admin's to fix (``providers.<name>.endpoint``, the CA bundle), a timeout or a connection
        error is transient."""
        if isinstance(exc, requests.exceptions.SSLError):
            host = urlsplit(endpoint).netloc
            setting = f"providers.{self.name}.endpoint"
            problem = f"TLS verification failed for {host}: check {setting} and the system CA bundle ({exc})"
            return self.error(ProviderMisconfigured, problem, code="tls")
        code = "timeout" if isinstance(exc, requests.Timeout) else type(exc).__name__
        failed = "timed out" if code == "timeout" else "request failed"
        detail = f"{self.label} {what}: {failed} after {retries} retries ({type(exc).__name__}: {exc})"
        return self.error(TemporarilyUnavailable, detail, code=code)

    def unreadable(self, status: int, what: str, *, endpoint: str, expected: str) -> ProviderError:
        """The error an answer without the vendor's body (``expected``: "a JSON answer", "a Response") means: a 5xx
        or a proxy's page is transient; a 404 is most likely the wrong ``providers.<name>.endpoint``."""
        if status == 404:
            return self.error(
                ProviderMisconfigured, f"{self.label} {what}: HTTP 404; is {endpoint} the right endpoint?", code=404
            )
        if status >= 500:
            return self.error(TemporarilyUnavailable, f"{self.label} {what}: HTTP {status}", code=status)
        return self.error(
            TemporarilyUnavailable, f"{self.label} {what}: HTTP {status} without {expected}", code="not_json"
        )

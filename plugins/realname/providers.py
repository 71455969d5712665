"""Verification providers: the interface the ``realname`` plugin drives, and the Baidu H5 ("faceprint") provider.

A provider launches a verification the user completes in a phone browser, and later says how it ended.
Everything here is synchronous and blocking (the plugin calls it through ``run_blocking``)::

    launch = provider.start(return_url)            # Launch(reference, url, expires_in)
    ...                                            # the user opens launch.url and comes back
    result = provider.result(launch.reference)     # None while unfinished, else a Result

``reference`` is the provider's opaque id of one verification (Baidu: the ``verify_token``; WeBank: the
``orderNo``). It is the only provider value the plugin stores. The outcome is decided only by
:meth:`RealnameProvider.result` (server to server), never by which URL the browser came back through.

The interface is shaped for both providers:

- Baidu needs nothing from the user before launch (the H5 page asks for the ID card);
  ``needs_identity`` is false. Its ``result/detail`` gives similarity, liveness and spoofing scores and the
  confirmed name and ID number; :class:`PassRule` turns the scores into passed/failed.
- WeBank (:class:`WebankFaceId`) needs the name and ID number *before* launch (``getAdvFaceId``), so it sets
  ``needs_identity`` and receives an :class:`Identity` in :meth:`RealnameProvider.start`; its launch URL
  is signed with a single-use NONCE ticket, so :meth:`RealnameProvider.link` answers None (a pending
  verification cannot be re-linked and a second ``/verify`` replaces it); its result is queried by
  ``orderNo`` (``queryfacerecord``: ``code`` "0", ``similarity``, ``liveRate``).
"""

from __future__ import annotations

import abc
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.contract.errors import (
    BadCallback,
    ProviderError,
    ProviderMisconfigured,
    QuotaExhausted,
    RateLimited,
    TemporarilyUnavailable,
)
from plugins.realname.rules import PassRule, Result, WebankRule, baidu_verdict, webank_verdict

__all__ = ["BaiduFaceprint", "Identity", "Launch", "PassRule", "RealnameProvider", "Result", "WebankFaceId"]

log = logging.getLogger(__name__)

#: Baidu: a verify_token is valid this long for completing the verification (2 hours).
BAIDU_WINDOW = 2 * 3600.0


@dataclass(frozen=True)
class Identity:
    """A name and an ID number the user typed (WeBank, Baidu plans with ``idcard/submit``). Memory only."""

    name: str = field(repr=False)
    id_number: str = field(repr=False)


@dataclass(frozen=True)
class Launch:
    """A started verification: ``reference`` (opaque id to store), ``url`` (for the user), ``expires_in`` (s)."""

    reference: str
    url: str
    expires_in: float


class RealnameProvider(abc.ABC):
    """What the plugin needs from a verification provider. Methods block; errors are ``UserFacingError``s."""

    #: The provider's config name (``plugins.realname.provider``).
    name: str = ""
    #: Whether :meth:`start` needs the user's name and ID number (asked in chat before launch).
    needs_identity: bool = False
    #: Whether :meth:`result` returns the confirmed name and ID number (shown masked).
    identity_in_result: bool = True
    #: Catalogue key of the "open the page" message.
    started_key: str = "realname.started"

    @abc.abstractmethod
    def start(self, return_url: str, identity: Identity | None = None) -> Launch:
        """Launch a verification; the user's browser is sent back to ``return_url`` when it ends."""

    @abc.abstractmethod
    def link(self, reference: str, return_url: str) -> str | None:
        """The page of a still-valid verification again, or None when it cannot be given twice."""

    @abc.abstractmethod
    def result(self, reference: str, callback_code: str | None = None) -> Result | None:
        """The outcome, or None while the verification is not finished (or has no result yet).

        ``callback_code``: the ``code`` of a signed browser callback that just came in (WeBank), else None.

        Raises ``ProviderMisconfigured`` / ``QuotaExhausted`` / ``RateLimited`` / ``TemporarilyUnavailable``
        when the provider cannot be asked right now.
        """

    @abc.abstractmethod
    def stats(self, reference: str) -> dict[str, Any]:
        """The provider's per-step request statistics of one verification, for admins."""

    def describe(self) -> str:
        """One line for ``/plugins``."""
        return self.name


#: Errors that mean "cannot ask now", not "no result yet".
CANNOT_ASK = (ProviderMisconfigured, QuotaExhausted, RateLimited, TemporarilyUnavailable)


class BaiduFaceprint(RealnameProvider):
    """Baidu H5 real-name verification over :class:`core.providers.baidu.BaiduClient`.

    ``start``: ``verifyToken/generate`` for ``plan_id`` (then ``idcard/submit`` when given an identity) and
    the H5 URL with ``successUrl`` = ``failedUrl`` = ``return_url``. ``result``: ``result/detail`` judged by
    ``rule`` through the decision table (docs/realname.md): a known failure code is "failed", any other
    refusal (other than the "cannot ask now" errors, which are raised) "not finished".
    """

    name = "baidu"

    def __init__(
        self,
        client: Any,
        plan_id: str,
        rule: PassRule | None = None,
        *,
        h5_base_url: str = "",
        window: float = BAIDU_WINDOW,
    ) -> None:
        self.client = client
        self.plan_id = plan_id
        self.rule = rule or PassRule()
        self.h5_base_url = h5_base_url
        self.window = window

    def start(self, return_url: str, identity: Identity | None = None) -> Launch:
        """A new verify_token and its H5 page (``return_url`` is checked first, so a bad one costs no token)."""
        check_return_url(return_url)
        token = self.client.generate_verify_token(self.plan_id)
        if identity is not None:
            self.client.submit_idcard(token, identity.name, identity.id_number)
        return Launch(reference=token, url=self.link(token, return_url), expires_in=self.window)

    def link(self, reference: str, return_url: str) -> str:
        """The H5 page of ``reference`` (a verify_token stays usable for its whole window)."""
        return str(self.client.h5_url(reference, return_url, return_url, base=self.h5_base_url or None))

    def result(self, reference: str, callback_code: str | None = None) -> Result | None:
        """``result/detail`` through the decision table (:func:`~plugins.realname.rules.baidu_verdict`)."""
        try:
            detail = self.client.result_detail(reference)
        except CANNOT_ASK:
            raise
        except ProviderError as err:
            code = getattr(err, "code", None)
            verdict = baidu_verdict(None, code if code is not None else type(err).__name__, self.rule)
            log.debug("realname: Baidu result/detail answered %s: %s", code, "pending" if verdict is None else "failed")
            return verdict
        return baidu_verdict(detail, None, self.rule)

    def stats(self, reference: str) -> dict[str, Any]:
        """``result/stat`` as Baidu answers it."""
        stat = self.client.result_stat(reference)
        return stat if isinstance(stat, dict) else {"result": stat}

    def describe(self) -> str:
        """Provider, plan and rule for ``/plugins``."""
        r = self.rule
        return (
            f"baidu H5 faceprint, plan {self.plan_id}; passed when score ≥ {r.min_score:g}, "
            f"liveness ≥ {r.min_liveness:g}, spoofing ≤ {r.max_spoofing:g}"
        )


def is_web_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL: what the providers' pages can send a browser back to."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_return_url(url: str, what: str = "return_url") -> None:
    """``ValueError`` unless ``url`` is an absolute http(s) URL."""
    if not is_web_url(url):
        raise ValueError(f"{what} must be an absolute http(s) URL")


class WebankFaceId(RealnameProvider):
    """WeBank / Tencent Cloud FaceID H5 over :class:`core.providers.webank.WebankClient`.

    ``start`` (needs the identity): a new ``orderNo`` (the reference) and a random ``userId`` for this launch
    only (WeBank needs one; a random one ties nothing to the Telegram account), ``getAdvFaceId`` with the
    name and ID number, then the H5 login URL signed with a fresh NONCE ticket and ``url`` = ``return_url``.
    ``link`` is None: that URL works once. ``result``: ``queryfacerecord``; WeBank's verdict decides
    (``code`` "0": the same person, live), ``similarity`` and ``liveRate`` (both 0–100) are reported; a
    failure code is "failed" when WeBank has a record, or when a signed callback said the page ended
    (see :func:`~plugins.realname.rules.webank_verdict`).
    """

    name = "webank"
    needs_identity = True
    identity_in_result = False
    started_key = "realname.started_webank"

    def __init__(self, client: Any, *, window: float = BAIDU_WINDOW, rule: WebankRule | None = None) -> None:
        self.client = client
        self.window = window
        self.rule = rule or WebankRule()

    def start(self, return_url: str, identity: Identity | None = None) -> Launch:
        """``getAdvFaceId`` with ``identity``, then a single-use launch URL coming back to ``return_url``."""
        from core.providers.webank import new_order_no

        if identity is None:
            raise ValueError("WeBank needs the name and ID number before launch")
        check_return_url(return_url)  # before getAdvFaceId sends the name and ID number anywhere
        order_no = new_order_no("tg")
        user_id = "u" + secrets.token_hex(15)
        face = self.client.get_face_id(order_no, identity.name, identity.id_number, user_id)
        url = self.client.h5_login_url(face, user_id, return_url)
        return Launch(reference=order_no, url=url, expires_in=self.window)

    def link(self, reference: str, return_url: str) -> None:
        """None: a launch URL is signed with a single-use NONCE ticket, so it cannot be given twice."""
        return None

    def result(self, reference: str, callback_code: str | None = None) -> Result | None:
        """``queryfacerecord`` through the decision table (:func:`~plugins.realname.rules.webank_verdict`)."""
        record = self.client.query_result(reference)
        verdict = webank_verdict(record, callback_code, self.rule)
        if verdict is None:
            log.debug("realname: WeBank has no record for %s yet (code %s)", reference[:6], record.code)
        return verdict

    def check_return(self, reference: str, params: dict[str, Any]) -> bool:
        """Whether the browser callback ``params`` are WeBank's, for this order (a signature is required).
        Only a hint: the outcome still comes from :meth:`result`."""
        try:
            self.client.verify_callback(params, order_no=reference)
        except BadCallback as err:
            log.warning("realname: rejected a WeBank callback for %s: %s", reference[:6], err.detail)
            return False
        return True

    def stats(self, reference: str) -> dict[str, Any]:
        """What ``queryfacerecord`` says about the order (code, message, scores, time; never photo or video)."""
        record = self.client.query_result(reference)
        return {
            "code": record.code,
            "msg": record.msg,
            "similarity": record.similarity,
            "liveRate": record.live_rate,
            "occurredTime": record.occurred_time,
        }

    def describe(self) -> str:
        """Provider and rule for ``/plugins``."""
        return "webank FaceID H5; passed when WeBank answers code 0 (same person, live)"


def make_provider(config: dict[str, Any], services: Any) -> RealnameProvider | None:
    """The provider ``plugins.realname.provider`` names, or None when its credentials are not configured."""
    if config["provider"] == "webank":
        client = services.provider("webank")
        if client is None:
            return None
        rule = WebankRule(config["min_similarity"], config["min_live_rate"])
        return WebankFaceId(client, window=config["window_minutes"] * 60, rule=rule)
    if config["provider"] == "baidu":
        client = services.provider("baidu")
        if client is None:
            return None
        rule = PassRule(config["min_score"], config["min_liveness"], config["max_spoofing"])
        return BaiduFaceprint(
            client, config["plan_id"], rule, h5_base_url=config["h5_base_url"], window=config["window_minutes"] * 60
        )
    raise ValueError(f"unknown realname provider {config['provider']!r}")

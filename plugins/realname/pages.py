"""The return page: ``GET /verify/return/<ref>``, where the provider's H5 page sends the browser back.

Served on the bot's web server (``aipbot_web_routes``) and used when ``server.public_url`` is set (else the
H5 page comes back through the bot's ``t.me`` deep link, as before). A visit:

1. looks ``ref`` up (its shape first: 32 characters of ``[A-Za-z0-9_-]``): a session's ``return_ref``, random
   and bound to that session only — not its id, so the page's URL gives no way into the chat's commands;
2. for WeBank, checks the browser callback's signature (``check_return``) before believing anything: a forged
   callback changes nothing;
3. asks the provider at once (``Verifier.settle``, in the I/O pool) and, when this visit moved the session out of
   pending, notifies the owner in Telegram (``job.notify``: once, whoever wins — the poll stays the fallback);
4. answers a small page in the session's language: "done, go back to Telegram" or "we could not check yet, the
   bot will tell you", with a button to the bot's chat.

Never a name, an ID number, a score or a photo on the page. Unknown, malformed, expired, foreign or forged:
the same neutral page (the "could not check yet" one: same status, same text) and nothing happens. Headers:
a CSP without scripts, ``Referrer-Policy: no-referrer`` (the reference is in the URL), ``nosniff``, ``no-store``.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from core.contract.errors import UserFacingError
from core.infra import keys
from plugins.realname import job
from plugins.realname.ports import HoldsVerifier
from plugins.realname.sessions import FINISHED, PENDING, REPLACED, Session, looks_like_id

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
LANGS = ("en", "zh")
#: WeBank callback parameters passed to ``check_return`` (anything else in the query is ignored).
CALLBACK_KEYS = ("code", "orderNo", "h5faceId", "newSignature", "newSign", "liveRate")
MAX_PARAM = 256
#: At most one provider check per session per this many seconds, whatever the number of reloads, visitors or
#: processes: a visit in between answers from the last known state (:func:`may_check`).
RECHECK_SECONDS = 10.0

PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ margin: 0; font: 18px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC",
  "PingFang SC", sans-serif; background: #f4f6f8; color: #1c1e21; }}
main {{ max-width: 28rem; margin: 0 auto; padding: 3rem 1.25rem; text-align: center; }}
h1 {{ font-size: 1.4rem; margin: 0 0 1rem; }}
p {{ margin: 0 0 2rem; }}
a.button {{ display: inline-block; padding: .9rem 1.6rem; border-radius: .6rem; background: #2aabee;
  color: #fff; text-decoration: none; font-weight: 600; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p>{text}</p>
{button}
</main>
</body>
</html>
"""


def accept_language(header: str) -> str:
    """``en`` or ``zh``: the first of them the browser prefers (``Accept-Language``), else ``en``."""
    best, best_q = "en", -1.0
    for position, part in enumerate(header[:500].split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        lang = tag.strip().lower().split("-")[0]
        if lang in LANGS and q - position * 1e-6 > best_q:
            best, best_q = lang, q - position * 1e-6
    return best


async def may_check(services: Any, session_id: str) -> bool:
    """Whether a page visit may ask the provider about ``session_id`` now: the first visit of each
    :data:`RECHECK_SECONDS` window takes the key ``realname:visit:<session>`` in the state (an atomic add: Redis in
    cluster mode, so the window is shared by every process); the others answer from the database."""
    return bool(await services.state.add(keys.plugin("realname", "visit", session_id), 1, RECHECK_SECONDS))


class ReturnPage:
    """The endpoint of one bot's plugin (the verifier is looked up at each request: it exists once started)."""

    def __init__(self, plugin: HoldsVerifier) -> None:
        self.plugin = plugin

    async def endpoint(self, request: Request) -> Response:
        """``GET /verify/return/{ref}``."""
        lang = accept_language(request.headers.get("accept-language", ""))
        verifier = self.plugin.verifier
        ref = request.path_params.get("ref", "")
        if verifier is None or not looks_like_id(ref):
            return self.page(lang, done=False)
        session: Session | None = await verifier.services.run_db(verifier.sessions.by_return_ref, ref)
        if session is None:
            log.info("realname: return page with an unknown reference")
            return self.page(lang, done=False)
        lang = session.lang if session.lang in LANGS else lang
        if session.state in FINISHED:
            return self.page(lang, done=True)
        if session.state not in (PENDING, REPLACED):
            return self.page(lang, done=False)
        try:
            state = await self._check(request, session)
        except UserFacingError as err:
            log.info("realname: return page of %s could not check: %s", session.id[:6], err.detail)
            return self.page(lang, done=False)
        return self.page(lang, done=state in FINISHED)

    async def _check(self, request: Request, session: Session) -> str | None:
        """Ask the provider now; notify the owner when this visit decided the session. None: not believed."""
        verifier = self.plugin.verifier
        assert verifier is not None
        provider = verifier.provider()
        callback_code: str | None = None
        if provider.name == "webank":
            params = {k: v[:MAX_PARAM] for k, v in request.query_params.items() if k in CALLBACK_KEYS}
            check: Any = provider.check_return  # type: ignore[attr-defined]
            if not await verifier.services.run_blocking(check, session.reference, params):
                return None  # forged or incomplete: nothing is believed, nothing changes (and no check is spent)
            callback_code = params.get("code")
        if not await may_check(verifier.services, session.id):
            return session.state  # checked less than RECHECK_SECONDS ago: the last known state
        state, result, won = await verifier.settle(session, callback_code)
        if won:
            log.info("realname: verification %s decided by its return page", session.id[:6])
            await job.notify(verifier, session, state, result)
        return state

    def page(self, lang: str, *, done: bool) -> Response:
        """The page in ``lang``: "done" or the neutral "could not check yet", with the button to the bot."""
        verifier = self.plugin.verifier
        if verifier is None:
            return HTMLResponse("", status_code=503, headers=HEADERS)
        t = verifier.services.catalogue.text
        link = self.bot_link()
        button = (
            f'<a class="button" href="{html.escape(link)}" rel="noreferrer noopener">'
            f"{html.escape(t(lang, 'realname.page.button'))}</a>"
            if link
            else ""
        )
        body = PAGE.format(
            lang="zh-CN" if lang == "zh" else "en",
            title=html.escape(t(lang, "realname.page.title")),
            text=html.escape(t(lang, "realname.page.done" if done else "realname.page.pending")),
            button=button,
        )
        return HTMLResponse(body, headers=HEADERS)

    def bot_link(self) -> str:
        """``https://t.me/<bot>``: the transport's deep link without its payload (empty when there is none)."""
        verifier = self.plugin.verifier
        if verifier is None:
            return ""
        try:
            parts = urlsplit(verifier.services.deep_link("verify", "go"))
        except Exception:  # no transport yet, or one without web links
            return ""
        if parts.scheme != "https" or not parts.netloc:
            return ""
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

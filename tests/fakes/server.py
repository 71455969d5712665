"""The plumbing the fake servers share: a real HTTP server on 127.0.0.1 (a free port) in a thread.

A fake subclasses :class:`LocalServer` and implements :meth:`LocalServer.handle` (or, to see the request headers,
:meth:`LocalServer.handle_request`); requests are served with keep-alive (as the providers' gateways do), each in
its own thread (a handler may block, e.g. a long poll), and nothing is logged (request lines carry tokens).

A provider's fake subclasses :class:`ProviderFake` (a :class:`LocalServer` with what they share: a lock, requests
counted by path, its ``providers.<name>`` and ``http`` config sections, JSON answers, the fixture's life cycle).

Also here: :class:`Hangup` (raise it from a handler to close the connection without an answer) and
:func:`parse_form` (urlencoded and ``multipart/form-data`` bodies, files included). Chunked request bodies are
read like any other.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

#: A multipart upload: ``(filename, bytes)``.
Upload = tuple[str, bytes]


class Hangup(Exception):
    """Raised by a handler: the server closes the connection without answering (the request was read)."""


@dataclass
class Request:
    """One request as the server read it: ``query`` holds the first value of each query parameter."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    headers: Message

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header, ``""`` if none."""
        return self.headers.get("Content-Type", "")


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, Upload]]:
    """Split a ``multipart/form-data`` body into its plain fields and its files (``{field: (filename, bytes)}``).

    Raises ValueError without a boundary in *content_type*.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without boundary")
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for chunk in body.split(b"--" + match.group(1).encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(
            (h for h in head.decode("utf-8", "replace").split("\r\n") if h.lower().startswith("content-disposition")),
            "",
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r"\bfilename\*=(?:UTF-8'')?([^;]+)", disposition, re.I) or re.search(
            r'\bfilename="([^"]*)"', disposition
        )
        if not name:
            continue
        if filename:
            files[name.group(1)] = (unquote(filename.group(1).strip('"')), content)
        else:
            fields[name.group(1)] = content.decode("utf-8")
    return fields, files


def parse_form(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, Upload]]:
    """The fields (first value of each) and files of an urlencoded or ``multipart/form-data`` body."""
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        return parse_multipart(body, content_type)
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)), {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    timeout = 30  # an idle keep-alive connection is closed after this
    fake: LocalServer

    def log_message(self, format: str, *args: Any) -> None:  # request lines carry secrets: say nothing
        return

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return bytes(body)

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        request = Request(method, parts.path, query, self._body(), self.headers)
        try:
            status, content_type, payload = self.fake.handle_request(request)
        except Hangup:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


def _handle_error(request: Any, client_address: Any) -> None:
    """A client that went away is not news; a fake's own bug is printed (the client sees the connection close)."""
    if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
        import traceback

        traceback.print_exc()


class LocalServer:
    """A fake server's life cycle: ``start()`` / ``stop()`` (or ``with``), and its ``endpoint``."""

    name = "fake-server"
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def handle(
        self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str
    ) -> tuple[int, str, bytes]:
        """One request: ``(status, content type, body bytes)``; raise :class:`Hangup` to answer nothing."""
        raise NotImplementedError

    def handle_request(self, request: Request) -> tuple[int, str, bytes]:
        """One request, headers included; by default :meth:`handle` without the headers."""
        return self.handle(request.method, request.path, request.query, request.body, request.content_type)

    def start(self) -> Any:
        """Listen on 127.0.0.1 (a free port) in a background thread; returns ``self``. Starting twice is a no-op."""
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.handle_error = _handle_error  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (a no-op when not started)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port listened on."""
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}"


#: The ``http`` section of a provider fake's :meth:`ProviderFake.config`: fast timeouts and backoff for tests.
FAST_HTTP = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 2, "backoff": 0.01}


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the providers send JSON: UTF-8, Chinese as it is."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class ProviderFake(LocalServer):
    """What the fakes of the providers (Baidu, WeBank) share: requests counted by path under one lock, and the
    config sections that point the bot at them."""

    #: the ``providers.<name>`` key of the provider faked
    provider = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def provider_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``providers.<name>`` section pointing at this server."""
        raise NotImplementedError

    def config(self, *, http: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        """The parts of a whole config our code reads (``providers``, ``http``), with fast timeouts and backoff."""
        return {"providers": {self.provider: self.provider_config(**overrides)}, "http": {**FAST_HTTP, **(http or {})}}

    def count(self, path: str) -> int:
        """Requests received on ``path`` (every answer counts, errors and refusals included)."""
        with self._lock:
            return self._counts[path]


Fake = TypeVar("Fake", bound=LocalServer)


def running(server: Fake) -> Iterator[Fake]:
    """A fixture's body: ``server`` started, and stopped after the test (``yield from running(FakeX())``)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()

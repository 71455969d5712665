"""core.infra.http: settings from config, timeouts, bounded retries with backoff, TLS verification, log redaction."""

from __future__ import annotations

import contextlib
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from urllib3.util.retry import RequestHistory

from core.infra.http import MAX_BACKOFF, HttpSettings, Session, make_retry, make_session
from tests.fakes.baidu import FakeBaidu

PATH = "/rest/2.0/ocr/v1/general_basic"


@contextlib.contextmanager
def tls_server(directory: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a fresh self-signed certificate; yields its base URL."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    args = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]
    subprocess.run(
        ["openssl", *args, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.handle_error = lambda *a: None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_settings_from_config() -> None:
    assert HttpSettings.from_config({}) == HttpSettings()
    config = {
        "http": {"connect_timeout": 1.5, "read_timeout": 9, "retries": 4, "backoff": 0.2},
        "workers": {"io": 16, "cpu": 1},
    }
    settings = HttpSettings.from_config(config)
    assert settings == HttpSettings(connect_timeout=1.5, read_timeout=9.0, retries=4, backoff=0.2, pool_size=16)
    assert settings.timeout == (1.5, 9.0)


def test_backoff_doubles_from_the_first_retry_and_is_capped() -> None:
    settings = HttpSettings(backoff=0.5, retries=3)
    assert [settings.backoff_delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert HttpSettings(backoff=10).backoff_delay(5) == MAX_BACKOFF
    retry = make_retry(settings)
    one = RequestHistory("POST", "/x", None, 503, None)
    assert retry.new(history=(one,)).get_backoff_time() == 0.5
    assert retry.new(history=(one, one)).get_backoff_time() == 1.0
    assert make_retry(HttpSettings(backoff=0)).new(history=(one,)).get_backoff_time() == 0.0


def test_session_is_pooled_verified_and_retrying() -> None:
    session = make_session(HttpSettings(retries=3, pool_size=12))
    assert isinstance(session, Session) and session.verify is True
    adapter = session.get_adapter("https://aip.baidubce.com/")
    assert adapter.max_retries.total == 3
    assert adapter.max_retries.allowed_methods is None  # POST too
    assert adapter._pool_maxsize == 12
    assert session.get_adapter("http://127.0.0.1/") is adapter


def test_5xx_is_retried_and_the_last_answer_returned(fake_baidu: FakeBaidu) -> None:
    session = make_session(HttpSettings(retries=2, backoff=0.01))
    fake_baidu.inject(http_status=502, times=2, path=PATH)
    answer = session.post(fake_baidu.endpoint + PATH, data={"image": ""})
    assert answer.status_code == 200 and fake_baidu.count(PATH) == 3
    fake_baidu.reset_counters()
    fake_baidu.inject(http_status=503, times=10, path=PATH)
    answer = session.post(fake_baidu.endpoint + PATH, data={"image": ""})
    assert answer.status_code == 503 and fake_baidu.count(PATH) == 3


def test_timeouts_come_from_the_settings_and_are_retried(fake_baidu: FakeBaidu) -> None:
    session = make_session(HttpSettings(read_timeout=0.2, retries=1, backoff=0.01))
    fake_baidu.inject(stall=1.0, times=10, path=PATH)
    with pytest.raises(requests.RequestException) as info:
        session.post(fake_baidu.endpoint + PATH)
    assert "timed out" in str(info.value).lower()
    assert fake_baidu.count(PATH) == 2
    fake_baidu.reset_counters()
    fake_baidu.inject(stall=0.5, times=1, path=PATH)
    assert session.post(fake_baidu.endpoint + PATH, timeout=(1, 2)).status_code == 200  # explicit wins
    assert fake_baidu.count(PATH) == 1


def test_connection_errors_are_retried_then_raised() -> None:
    with FakeBaidu() as fake:
        url = fake.endpoint + PATH
    session = make_session(HttpSettings(retries=2, backoff=0.01, connect_timeout=0.5))
    with pytest.raises(requests.ConnectionError) as info:
        session.post(url)
    assert "Max retries exceeded" in str(info.value)


def test_tls_verification_stays_on(tmp_path: Path) -> None:
    session = make_session(HttpSettings(retries=2, backoff=0.01))
    with tls_server(tmp_path) as url:
        with pytest.raises(requests.exceptions.SSLError):
            session.get(url + "/")
        assert requests.get(url + "/", verify=str(tmp_path / "cert.pem"), timeout=5).text == "ok"  # server is fine


def test_urllib3_logs_are_redacted(fake_baidu: FakeBaidu, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    session = make_session(HttpSettings(retries=1, backoff=0.01))
    secret_params = {"access_token": "24.tokenvalue-abc", "client_secret": "csecret-xyz", "sign": "SIGNATURE123"}
    session.post(fake_baidu.endpoint + PATH, params=secret_params)
    fake_baidu.inject(http_status=503, times=5, path=PATH)
    session.post(fake_baidu.endpoint + PATH, params=secret_params)
    with FakeBaidu() as gone:
        closed = gone.endpoint
    with pytest.raises(requests.ConnectionError):
        session.post(closed + PATH, params=secret_params)
    assert "access_token=***" in caplog.text and "Retry" in caplog.text
    for value in secret_params.values():
        assert value not in caplog.text

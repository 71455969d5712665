"""The WeBank FaceID client against the fake server: signatures, tokens and tickets, launch URL, callback, query."""

from __future__ import annotations

import itertools
import logging
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from core.contract.errors import BadCallback, ProviderError, ProviderMisconfigured, TemporarilyUnavailable
from core.infra.http import HttpSettings
from core.infra.tokens import TokenService
from core.providers.webank import (
    FaceId,
    WebankClient,
    new_nonce,
    new_order_no,
    sign,
)
from tests.fakes.webank import FACE_ID_PATH, QUERY_PATH, TOKEN_PATH, FakeWebank, webank_sign

TICKET = "XO99Qfxlti9iTVgHAjwvJdAZKN3nMuUhrsPdPlPVKlcyS50N6tlLnfuFBPIucaMS"
NONCE = "kHoSxvLZGxSoFsjxlbzEoUzh5PAnTU7T"
NAME = "韩梅梅"
ID_NUMBER = "11010519491231002X"
FAST = HttpSettings(connect_timeout=2, read_timeout=2, retries=1, backoff=0.01)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock):
    server = FakeWebank(clock=clock).start()
    yield server
    server.stop()


def client_for(fake: FakeWebank, clock=None, **kwargs) -> WebankClient:
    tokens = TokenService(clock=clock) if clock is not None else TokenService()
    return WebankClient(fake.app_id, fake.secret, fake.endpoint, http=FAST, tokens=tokens, **kwargs)


def launch(client: WebankClient, callback: str = "https://t.me/aipbot_test_bot?start=verify-x") -> tuple[FaceId, str]:
    order = new_order_no("t")
    face = client.get_face_id(order, NAME, ID_NUMBER, "user1")
    return face, client.h5_login_url(face, "user1", callback)


# ---------------------------------------------------------------------------------------------- signatures
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["IDAXXXXX", "userID19959248596551", NONCE, "1.0.0"], "D7606F1741DDCF90757DA924EDCF152A200AC7F0"),
        (["IDAXXXXX", "orderNo596551", NONCE, "1.0.0"], "6CD5F0DBCFA1155E2A66754B33C2E67DD358393B"),
    ],
)
def test_the_worked_examples_of_the_documentation_reproduce_exactly(values, expected):
    assert sign(values, TICKET) == expected
    assert sign(reversed(values), TICKET) == expected  # order and names play no part
    assert webank_sign(values, TICKET) == expected  # the fake signs the same way, written on its own


def test_sign_refuses_a_missing_value_or_ticket():
    with pytest.raises(ValueError):
        sign(["a", None], TICKET)
    with pytest.raises(ValueError):
        sign(["a"], "")


def test_nonces_and_order_numbers_have_the_documented_shape():
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50 and all(len(n) == 32 and n.isalnum() for n in nonces)
    order = new_order_no("tg")
    assert len(order) == 32 and order.isalnum() and order.startswith("tg")


# ---------------------------------------------------------------------------------------------- the flow
def test_face_id_launch_url_callback_and_query_result(fake):
    client = client_for(fake)
    face, url = launch(client)
    order = fake.orders[face.order_no]
    assert (order.name, order.id_no, order.user_id) == (NAME, ID_NUMBER, "user1")
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).netloc == fake.host and urlsplit(url).path == "/api/web/login"
    assert query["url"] == ["https://t.me/aipbot_test_bot?start=verify-x"]
    assert query["from"] == ["browser"] and query["redirectType"] == ["1"] and query["version"] == ["1.0.0"]

    assert client.query_result(face.order_no).has_record is False  # nothing yet

    assert requests.get(url, timeout=5).status_code == 200  # the phone opens the page
    callback = fake.finish(face.order_no, passed=True, similarity=96.5, live_rate=98)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    checked = client.verify_callback(params, order_no=face.order_no)
    assert checked.signed and checked.face_check_passed and checked.live_rate == 98

    record = client.query_result(face.order_no)
    assert record.passed and record.has_record and (record.similarity, record.live_rate) == (96.5, 98)
    assert fake.refused == []


def test_a_failed_check_is_an_outcome_not_an_error(fake):
    client = client_for(fake)
    face, url = launch(client)
    requests.get(url, timeout=5)
    fake.finish(face.order_no, passed=False)
    record = client.query_result(face.order_no)
    assert not record.passed and record.has_record and record.similarity == 31 and record.code != "0"


def test_a_launch_url_works_once_and_every_launch_fetches_its_own_nonce_ticket(fake):
    client = client_for(fake)
    face, first = launch(client)
    second = client.h5_login_url(face, "user1", "https://example.org/back")
    assert fake.ticket_fetches("NONCE") == 2
    assert parse_qs(urlsplit(first).query)["sign"] != parse_qs(urlsplit(second).query)["sign"]
    assert requests.get(first, timeout=5).status_code == 200
    again = requests.get(first, timeout=5)
    assert again.status_code == 400 and fake.refused[-1] == ("/api/web/login", "nonce")
    assert requests.get(second, timeout=5).status_code == 200  # the other launch has its own ticket


def test_the_nonce_ticket_is_bound_to_the_user_id_and_expires(fake, clock):
    client = client_for(fake, clock)
    _, url = launch(client)
    forged = url.replace("userId=user1", "userId=user2")
    assert requests.get(forged, timeout=5).status_code == 400
    clock.advance(121)  # the NONCE ticket lives 120 s
    assert requests.get(url, timeout=5).status_code == 400
    assert [r for _, r in fake.refused] == ["param", "nonce"]


def test_the_fake_refuses_every_wrong_signature(fake):
    client = client_for(fake)
    ticket = client.sign_ticket()
    base = {"appId": fake.app_id, "version": "1.0.0", "nonce": new_nonce()}
    order = new_order_no()
    face_body = {**base, "orderNo": order, "name": NAME, "idNo": ID_NUMBER, "userId": "u1"}
    right = sign([fake.app_id, "u1", "1.0.0", face_body["nonce"]], ticket)
    wrongs = [
        right[:-1] + ("0" if right[-1] != "0" else "1"),  # one digit off
        sign([fake.app_id, "u1", "1.0.0", face_body["nonce"]], ticket + "x"),  # another ticket
        sign([fake.app_id, "u2", "1.0.0", face_body["nonce"]], ticket),  # another user
        "",
    ]
    for wrong in wrongs:
        answer = requests.post(f"{fake.endpoint}{FACE_ID_PATH}?orderNo={order}", json={**face_body, "sign": wrong})
        assert answer.json()["code"] != "0" and "faceId" not in answer.text
    query_body = {**base, "orderNo": order}
    other_nonce = ("y" if base["nonce"][0] == "x" else "x") + base["nonce"][1:]  # never the nonce itself
    wrong = sign([fake.app_id, order, "1.0.0", other_nonce], ticket)
    answer = requests.post(f"{fake.endpoint}{QUERY_PATH}?orderNo={order}", json={**query_body, "sign": wrong})
    assert answer.json()["code"] != "0"
    assert [r for _, r in fake.refused] == ["sign"] * 5 and fake.orders == {}
    answer = requests.post(f"{fake.endpoint}{FACE_ID_PATH}?orderNo={order}", json={**face_body, "sign": right})
    assert answer.json()["code"] == "0"  # and the right one is accepted


# ---------------------------------------------------------------------------------------------- callbacks
def test_a_forged_or_unsigned_callback_is_rejected(fake):
    client = client_for(fake)
    face, url = launch(client)
    requests.get(url, timeout=5)
    params = {k: v[0] for k, v in parse_qs(urlsplit(fake.finish(face.order_no)).query).items()}
    forged = [
        {**params, "newSignature": params["newSignature"][:-2] + "00"},
        {**params, "code": "0", "newSignature": sign([fake.app_id, face.order_no, "0"], "guessed-ticket")},
        {**params, "orderNo": new_order_no()},  # a genuine signature moved to another order
    ]
    for bad in forged:
        with pytest.raises(BadCallback):
            client.verify_callback(bad)
    with pytest.raises(BadCallback, match="another order"):
        client.verify_callback(params, order_no=new_order_no())
    unsigned = {k: v for k, v in params.items() if k != "newSignature"}
    with pytest.raises(BadCallback, match="without a signature"):
        client.verify_callback(unsigned)
    assert client.verify_callback(unsigned, require_signature=False).signed is False
    newsign = {**unsigned, "newSign": params["newSignature"].lower()}  # the older name, any case
    assert client.verify_callback(newsign).signed


def test_a_callback_signed_with_the_previous_ticket_is_accepted_for_a_minute_only(fake, clock):
    client = client_for(fake, clock)
    face, url = launch(client)
    requests.get(url, timeout=5)
    params = {k: v[0] for k, v in parse_qs(urlsplit(fake.finish(face.order_no)).query).items()}
    clock.advance(20 * 60)  # the token (and with it the SIGN ticket) is renewed
    assert len(client.sign_tickets()) == 2 and fake.token_fetches == 2
    assert client.verify_callback(params).signed
    clock.advance(61)
    assert len(client.sign_tickets()) == 1
    with pytest.raises(BadCallback, match="wrong signature"):
        client.verify_callback(params)


# ---------------------------------------------------------------------------------------------- tokens
def test_tokens_are_renewed_every_twenty_minutes_never_more_often_and_tickets_follow(fake, clock):
    client = client_for(fake, clock)
    face, _ = launch(client)
    for _ in range(180):  # three hours, a query a minute
        clock.advance(60)
        client.query_result(face.order_no)
    issued = fake.token_issued_at
    assert len(issued) == 1 + 180 * 60 // 1200
    assert all(b - a >= 1200 for a, b in itertools.pairwise(issued))
    assert fake.ticket_fetches("SIGN") == len(issued)  # one SIGN ticket per token
    assert fake.refused == []


def test_the_renewal_cadence_is_configurable(fake, clock):
    client = client_for(fake, clock, renew_minutes=5)
    client.sign_ticket()
    for _ in range(60):
        clock.advance(60)
        client.sign_ticket()
    assert fake.token_fetches == 1 + 60 // 5


def test_concurrent_callers_cause_one_fetch_of_the_token_and_of_the_ticket(fake, clock):
    fake.latency = 0.05  # every fetch takes a while, so the callers really overlap
    client = client_for(fake, clock)
    face, _ = launch(client)
    fake.latency = 0.02

    def burst() -> list[BaseException]:
        errors: list[BaseException] = []
        barrier = threading.Barrier(12)

        def one() -> None:
            try:
                barrier.wait()
                assert client.query_result(face.order_no).code != "0"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors

    assert burst() == []
    assert (fake.token_fetches, fake.ticket_fetches("SIGN")) == (1, 1)
    clock.advance(1200)  # due: twelve callers at once renew it once
    assert burst() == []
    assert (fake.token_fetches, fake.ticket_fetches("SIGN")) == (2, 2)
    assert fake.count(QUERY_PATH) == 24 and fake.refused == []


# ---------------------------------------------------------------------------------------------- errors
def test_wrong_credentials_are_the_admins_problem_and_the_secret_stays_out(fake):
    client = WebankClient(fake.app_id, "wrong-secret-value-123", fake.endpoint, http=FAST, tokens=TokenService())
    with pytest.raises(ProviderMisconfigured) as err:
        client.sign_ticket()
    assert err.value.vendor == "webank"
    assert "providers.webank.secret" in err.value.detail and "wrong-secret-value-123" not in err.value.detail
    assert fake.count(TOKEN_PATH) == 1


def test_a_wrong_endpoint_and_a_dead_server_are_told_apart(fake):
    wrong = WebankClient(fake.app_id, fake.secret, fake.endpoint + "/nothing", http=FAST, tokens=TokenService())
    with pytest.raises(ProviderMisconfigured, match="right endpoint"):
        wrong.sign_ticket()
    dead_port = FakeWebank().start()
    endpoint = dead_port.endpoint
    dead_port.stop()
    dead = WebankClient(fake.app_id, fake.secret, endpoint, http=FAST, tokens=TokenService())
    with pytest.raises(TemporarilyUnavailable):
        dead.sign_ticket()


def test_a_refused_face_id_request_raises_with_webanks_message(fake):
    client = client_for(fake)
    order = new_order_no()
    client.get_face_id(order, NAME, ID_NUMBER, "user1")
    with pytest.raises(ProviderError, match="orderNo already used") as err:
        client.get_face_id(order, NAME, ID_NUMBER, "user1")
    assert type(err.value) is ProviderError and err.value.vendor == "webank"
    assert NAME not in str(err.value) and ID_NUMBER not in str(err.value)


def test_bad_arguments_are_refused_before_any_request(fake):
    client = client_for(fake)
    for args in [("x" * 33, NAME, ID_NUMBER, "u"), ("ok1", "", ID_NUMBER, "u"), ("ok1", NAME, ID_NUMBER, "u/../")]:
        with pytest.raises(ValueError):
            client.get_face_id(*args)
    with pytest.raises(ValueError):
        client.h5_login_url(FaceId("o1", "f", fake.host), "u", "tg://resolve?domain=x")
    assert fake.api_calls() == 0


def test_from_config_needs_both_credentials_and_reads_the_section(fake):
    assert WebankClient.from_config({"providers": {"webank": {"app_id": "", "secret": "s"}}}) is None
    assert WebankClient.from_config({}) is None
    client = WebankClient.from_config(fake.config(renew_minutes=7), TokenService())
    assert client is not None and client.renew_every == 420 and client.endpoint == fake.endpoint
    assert fake.secret not in repr(client) and fake.app_id not in repr(client)


def test_nothing_secret_or_personal_reaches_the_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    client = client_for(fake)
    face, url = launch(client)
    requests.get(url, timeout=5)
    fake.finish(face.order_no)
    client.query_result(face.order_no)
    secrets_ = [fake.secret, client.access_token(), client.sign_ticket(), face.face_id, NAME, ID_NUMBER]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records and not [s for s in secrets_ if s in text]
    assert "sign=" not in text.replace("sign=***", "")

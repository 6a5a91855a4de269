"""Webhook delivery against a real HTTP receiver: signed, retried with backoff, never lost or
doubled, and honest about what failed."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket

import pytest

from microseg.activation.webhook import (
    WebhookTarget,
    deliver,
    signature,
    verify,
)
from microseg.errors import ConfigError
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cret"
BACKOFF = 0.01


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set in the environment must not stand between the client and 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def _messages(n: int, prefix: str = "m") -> list[dict]:
    # Fields out of order on purpose: the body must sort them.
    return [
        {"segment": "café", "idempotency_key": f"{prefix}{i}", "person_id": i} for i in range(n)
    ]


def _target(url: str, **overrides) -> WebhookTarget:
    settings = {"timeout_s": 2.0, "max_attempts": 5, "backoff_s": BACKOFF, **overrides}
    return WebhookTarget(name="crm", url=url, secret=SECRET, **settings)


def _batch_key(keys: list[str]) -> str:
    return hashlib.sha256(json.dumps(keys).encode("utf-8")).hexdigest()


def test_all_sent_once_signed_and_in_order() -> None:
    messages = _messages(5)
    sleeps: list[float] = []
    with Receiver(SECRET) as receiver:
        results = deliver(_target(receiver.url), messages, sleep=sleeps.append)
    keys = [m["idempotency_key"] for m in messages]
    assert [r.idempotency_key for r in results] == keys
    assert {(r.status, r.attempts, r.response_code, r.error) for r in results} == {
        ("sent", 1, 200, None)
    }
    assert all(r.latency_ms > 0 for r in results)
    assert receiver.keys == keys
    assert receiver.bad_signatures == 0
    assert sleeps == []

    [(headers, body)] = receiver.posts
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == _batch_key(keys)
    # Compact, sorted, UTF-8 JSON, signed over "<timestamp>.<body>" with the secret.
    assert json.loads(body) == {"destination": "crm", "messages": messages}
    assert body == json.dumps(
        {"destination": "crm", "messages": messages},
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=False,
    ).encode("utf-8")
    assert "café".encode() in body
    assert body.index(b'"idempotency_key"') < body.index(b'"person_id"') < body.index(b'"segment"')
    timestamp = headers["x-microseg-timestamp"]
    assert timestamp.isdigit()
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers["x-microseg-signature"] == f"sha256={expected.hexdigest()}"


def test_signature_and_verify_agree_and_refuse_any_change() -> None:
    body = b'{"destination":"crm","messages":[]}'
    header = signature(SECRET, "1700000000", body)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert verify(SECRET, "1700000000", body, header)
    assert not verify("other", "1700000000", body, header)
    assert not verify(SECRET, "1700000001", body, header)  # the timestamp is signed too
    assert not verify(SECRET, "1700000000", body + b" ", header)
    assert not verify(SECRET, "1700000000", body, header.upper())
    assert not verify(SECRET, "1700000000", body, header[:-1])
    assert not verify(SECRET, "1700000000", body, "")
    assert not verify(SECRET, "1700000000", body, None)
    assert not verify(SECRET, "1700000000", body, "sha256=é")


def test_receiver_with_another_secret_rejects_without_retry() -> None:
    sleeps: list[float] = []
    with Receiver("not-the-secret") as receiver:
        results = deliver(_target(receiver.url), _messages(3), sleep=sleeps.append)
    assert {(r.status, r.attempts, r.response_code, r.error) for r in results} == {
        ("rejected", 1, 401, "HTTP 401")
    }
    assert receiver.bad_signatures == 1
    assert receiver.keys == []
    assert sleeps == []


@pytest.mark.parametrize("code", [500, 429, 408])
def test_two_failures_that_say_later_then_sent_with_exponential_backoff(code: int) -> None:
    messages = _messages(4)
    sleeps: list[float] = []
    with Receiver(SECRET) as receiver:
        receiver.fail_next(code, times=2)
        results = deliver(_target(receiver.url), messages, sleep=sleeps.append)
    assert {(r.status, r.attempts, r.response_code, r.error) for r in results} == {
        ("sent", 3, 200, None)
    }
    assert sleeps == [BACKOFF, 2 * BACKOFF]
    assert receiver.keys == [m["idempotency_key"] for m in messages]
    assert receiver.batch_keys == [_batch_key(receiver.keys)] * 3  # same key on every retry
    assert receiver.bad_signatures == 0  # retries are signed too


def test_400_is_rejected_after_one_attempt() -> None:
    sleeps: list[float] = []
    with Receiver(SECRET) as receiver:
        receiver.fail_next(400, times=1)  # a retry would succeed: there must be none
        results = deliver(_target(receiver.url), _messages(2), sleep=sleeps.append)
    assert {(r.status, r.attempts, r.response_code, r.error) for r in results} == {
        ("rejected", 1, 400, "HTTP 400")
    }
    assert receiver.requests == 1
    assert receiver.keys == []
    assert sleeps == []


def test_persistent_500_goes_to_dead_letter_after_max_attempts() -> None:
    sleeps: list[float] = []
    with Receiver(SECRET) as receiver:
        receiver.fail_next(500, times=100)
        results = deliver(_target(receiver.url, max_attempts=4), _messages(2), sleep=sleeps.append)
    assert {(r.status, r.attempts, r.response_code, r.error) for r in results} == {
        ("dead_letter", 4, 500, "HTTP 500")
    }
    assert receiver.requests == 4
    assert receiver.keys == []
    assert sleeps == [BACKOFF, 2 * BACKOFF, 4 * BACKOFF]  # none after the last attempt


def test_a_stall_past_the_timeout_is_retried_and_arrives_once() -> None:
    messages = _messages(3)
    sleeps: list[float] = []
    with Receiver(SECRET) as receiver:
        receiver.stall_next(3.0, times=1)
        results = deliver(_target(receiver.url, timeout_s=0.3), messages, sleep=sleeps.append)
        assert {(r.status, r.attempts, r.response_code) for r in results} == {("sent", 2, 200)}
        assert receiver.requests == 2
    assert sleeps == [BACKOFF]
    assert receiver.keys == [m["idempotency_key"] for m in messages]  # exactly once
    assert receiver.batch_keys == [_batch_key(receiver.keys)] * 2


def test_stalls_until_max_attempts_say_timed_out() -> None:
    with Receiver(SECRET) as receiver:
        receiver.stall_next(3.0, times=2)
        target = _target(receiver.url, timeout_s=0.25, max_attempts=2)
        results = deliver(target, _messages(1), sleep=lambda _: None)
    [result] = results
    assert (result.status, result.attempts, result.response_code) == ("dead_letter", 2, None)
    assert result.error == "timed out after 0.25 s"
    assert 200 <= result.latency_ms < 2000
    assert receiver.keys == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_peer_that_never_answers_times_out(scheme: str) -> None:
    # A socket that listens but never accepts: the connection opens (backlog), then silence.
    # Over http the wait is for the response (a bare TimeoutError); over https it is the TLS
    # handshake, which urllib wraps in URLError: both are the same timeout to the caller.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        target = _target(f"{scheme}://127.0.0.1:{port}/hook", timeout_s=0.2, max_attempts=2)
        [result] = deliver(target, _messages(1), sleep=lambda _: None)
    assert (result.status, result.attempts, result.response_code) == ("dead_letter", 2, None)
    assert result.error == "timed out after 0.2 s"


def test_nothing_listening_is_a_connection_error_then_dead_letter() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    target = _target(f"http://127.0.0.1:{port}/hook", max_attempts=3)
    results = deliver(target, _messages(2), sleep=sleeps.append)
    assert {(r.status, r.attempts, r.response_code, r.error) for r in results} == {
        ("dead_letter", 3, None, "connection refused")
    }
    assert sleeps == [BACKOFF, 2 * BACKOFF]


def test_batches_follow_batch_size_and_keep_their_key_across_retries() -> None:
    messages = _messages(7)
    keys = [m["idempotency_key"] for m in messages]
    batches = [keys[0:3], keys[3:6], keys[6:7]]
    with Receiver(SECRET) as receiver:
        receiver.fail_next(503, times=1)  # the first batch is sent twice
        results = deliver(_target(receiver.url, batch_size=3), messages, sleep=lambda _: None)
    assert [r.idempotency_key for r in results] == keys
    assert [r.attempts for r in results] == [2, 2, 2, 1, 1, 1, 1]
    assert {r.status for r in results} == {"sent"}
    assert receiver.keys == keys
    first, second, third = (_batch_key(batch) for batch in batches)
    assert len({first, second, third}) == 3
    assert receiver.batch_keys == [first, first, second, third]
    sizes = [len(json.loads(body)["messages"]) for _, body in receiver.posts]
    assert sizes == [3, 3, 3, 1]


def test_one_batch_failing_does_not_stop_the_next() -> None:
    messages = _messages(4)
    with Receiver(SECRET) as receiver:
        receiver.fail_next(422, times=1)
        results = deliver(_target(receiver.url, batch_size=2), messages, sleep=lambda _: None)
    assert [r.status for r in results] == ["rejected", "rejected", "sent", "sent"]
    assert receiver.keys == ["m2", "m3"]


def test_a_message_without_a_key_stops_the_run_before_any_send() -> None:
    messages = [*_messages(3), {"person_id": 9}]
    with Receiver(SECRET) as receiver:
        with pytest.raises(ValueError, match="idempotency_key"):
            deliver(_target(receiver.url, batch_size=2), messages, sleep=lambda _: None)
        assert receiver.requests == 0


def test_no_messages_no_request() -> None:
    with Receiver(SECRET) as receiver:
        assert deliver(_target(receiver.url), []) == []
        assert receiver.requests == 0


def test_a_url_that_is_not_http_is_refused_when_the_target_is_built() -> None:
    with pytest.raises(ConfigError) as refused:
        WebhookTarget(name="crm", url="ftp://example.com/hook", secret=SECRET)
    assert str(refused.value) == "webhook 'crm': url 'ftp://example.com/hook' is not http(s)"
    with pytest.raises(ConfigError, match="is not http"):
        WebhookTarget(name="crm", url="example.com/hook", secret=SECRET)
    with pytest.raises(ConfigError, match="batch_size"):
        WebhookTarget(name="crm", url="https://example.com/hook", secret=SECRET, batch_size=0)

"""Signed HTTP delivery of message batches to a webhook (standard library only).

Each batch is one POST whose body the receiver can authenticate: the signature is an
HMAC-SHA256 of the timestamp and the exact body bytes, so a receiver that checks it (and the
timestamp's age) knows the batch came from us and was not replayed or altered. Failures that
can pass (5xx, timeouts, connection errors) are retried with exponential backoff under the same
Idempotency-Key, so a receiver that already stored a batch whose answer got lost can drop the
repeat; failures that cannot pass (4xx) are not retried. Delivery never raises for the network:
every message comes back with a DeliveryResult saying what happened to it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from microseg.errors import ConfigError


def url_problem(url: str) -> str | None:
    """Why a URL cannot receive webhooks (None: it can): checked when triggers.yml is read."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "is not http(s)"
    try:
        parts.port  # noqa: B018 (parsing it is the check: "host:abc" would fail every send)
    except ValueError as exc:
        return f"has a bad port: {exc}"
    return None


@dataclass(frozen=True)
class WebhookTarget:
    """Where and how to deliver: checked when built, so a bad URL fails before any send."""

    name: str  # destination name, for messages
    url: str  # http:// or https://
    secret: str  # HMAC-SHA256 key
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 0.5  # first retry delay; doubles each retry (exponential backoff)
    batch_size: int = 100

    def __post_init__(self) -> None:
        problem = url_problem(self.url)
        if problem:
            raise ConfigError(f"webhook '{self.name}': url {self.url!r} {problem}")
        if self.max_attempts < 1:
            raise ConfigError(
                f"webhook '{self.name}': max_attempts {self.max_attempts!r} must be at least 1"
            )
        if self.batch_size < 1:
            raise ConfigError(
                f"webhook '{self.name}': batch_size {self.batch_size!r} must be at least 1"
            )
        if self.timeout_s <= 0:
            raise ConfigError(
                f"webhook '{self.name}': timeout_s {self.timeout_s!r} must be positive"
            )
        if self.backoff_s < 0:
            raise ConfigError(
                f"webhook '{self.name}': backoff_s {self.backoff_s!r} must not be negative"
            )


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one message (every message of a batch shares its batch's outcome)."""

    idempotency_key: str  # the message's key
    # 'sent' | 'dead_letter' (gave up after max_attempts of 5xx/timeouts/connection errors)
    # | 'rejected' (a 4xx, or a 3xx since redirects are not followed: never retried)
    status: str
    attempts: int
    response_code: int | None  # last HTTP status, None for timeout/connection error
    latency_ms: float  # of the last attempt
    error: str | None  # one line, e.g. "HTTP 500", "timed out after 5.0 s", "connection refused"


# A request timeout and a rate limit say "later", not "never": retried like a 5xx.
RETRYABLE_4XX = (408, 429)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Microseg-Signature value: one definition for the sender and every receiver."""
    digest = hmac.new(
        secret.encode("utf-8"), timestamp.encode("utf-8") + b"." + body, hashlib.sha256
    )
    return f"sha256={digest.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, header: str | None) -> bool:
    """Whether `header` signs (timestamp, body) with `secret`; constant-time, so a forger learns
    nothing from how long a wrong guess takes. The receiver should also bound the timestamp's
    age to refuse replays: that policy is the receiver's, not this check's."""
    if not isinstance(header, str):
        return False
    expected = signature(secret, timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, header.encode("utf-8", "replace"))


def batch_key(keys: list[str]) -> str:
    """The batch's Idempotency-Key: the same messages in the same order give the same key, on
    every retry and on a later run that sends the same batch again."""
    return hashlib.sha256(json.dumps(keys).encode("utf-8")).hexdigest()  # unambiguous


def deliver(
    target: WebhookTarget,
    messages: list[dict],
    sleep: Callable[[float], object] = time.sleep,
) -> list[DeliveryResult]:
    """POST `messages` to `target` in batches of batch_size, in order; one result per message,
    in input order. Raises only for messages that cannot be sent at all (no string
    idempotency_key, not JSON): they are all checked before the first POST, so a bad message
    never leaves a run half delivered."""
    batches = []
    for start in range(0, len(messages), target.batch_size):
        batch = messages[start : start + target.batch_size]
        keys = [_message_key(target, message) for message in batch]
        batches.append((keys, _encode(target, batch)))
    opener = _opener()
    results: list[DeliveryResult] = []
    for keys, body in batches:
        results.extend(_deliver_batch(target, opener, keys, body, sleep))
    return results


def _message_key(target: WebhookTarget, message: dict) -> str:
    key = message.get("idempotency_key") if isinstance(message, dict) else None
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"webhook '{target.name}': every message needs a non-empty string "
            f"idempotency_key, got {key!r}"
        )
    return key


def _encode(target: WebhookTarget, batch: list[dict]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and strict receivers refuse the whole batch.
    try:
        text = json.dumps(
            {"destination": target.name, "messages": batch},
            separators=(",", ":"),
            sort_keys=True,
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"webhook '{target.name}': a message is not JSON: {exc}") from exc
    return text.encode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would turn the POST into a body-less GET, whose 2xx would then
    count as delivered. A redirect is a wrong URL; it comes back as its 3xx (rejected)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002
        return None


def _opener() -> urllib.request.OpenerDirector:
    # Built per call: the proxy settings (http_proxy, no_proxy) are read from the environment now.
    return urllib.request.build_opener(_NoRedirect)


def _deliver_batch(
    target: WebhookTarget,
    opener: urllib.request.OpenerDirector,
    keys: list[str],
    body: bytes,
    sleep: Callable[[float], object],
) -> list[DeliveryResult]:
    idempotency_key = batch_key(keys)
    attempt = 0
    while True:
        attempt += 1
        code, error, latency_ms = _post(target, opener, body, idempotency_key)
        if code is not None and 200 <= code < 300:
            status = "sent"
        elif code is not None and code < 500 and code not in RETRYABLE_4XX:
            status = "rejected"  # 4xx (or a refused 3xx): the same request cannot pass later
        elif attempt >= target.max_attempts:
            status = "dead_letter"
        else:
            sleep(target.backoff_s * 2 ** (attempt - 1))
            continue
        return [DeliveryResult(key, status, attempt, code, latency_ms, error) for key in keys]


def _post(
    target: WebhookTarget,
    opener: urllib.request.OpenerDirector,
    body: bytes,
    idempotency_key: str,
) -> tuple[int | None, str | None, float]:
    """One attempt: (HTTP status or None, one-line error or None, latency in ms)."""
    # A fresh timestamp per attempt: a retry after backoff is not mistaken for a replay.
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        target.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Microseg-Timestamp": timestamp,
            "X-Microseg-Signature": signature(target.secret, timestamp, body),
            "Idempotency-Key": idempotency_key,
        },
    )
    started = time.perf_counter()
    try:
        # The status is the answer: the response body is not read, so a slow body cannot turn
        # an accepted batch into a timeout and a needless retry.
        with opener.open(request, timeout=target.timeout_s) as response:
            code, error = response.status, None
    except urllib.error.HTTPError as exc:  # any non-2xx status
        exc.close()
        code, error = exc.code, f"HTTP {exc.code}"
    except urllib.error.URLError as exc:  # failed before a response (connect, DNS, TLS)
        code, error = None, _network_error(target, exc.reason)
    except (OSError, http.client.HTTPException) as exc:  # timeout/reset while waiting for it
        code, error = None, _network_error(target, exc)
    latency_ms = (time.perf_counter() - started) * 1000
    return code, error, latency_ms


def _network_error(target: WebhookTarget, reason: object) -> str:
    """A one-line reason for a failure without an HTTP status."""
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return f"timed out after {target.timeout_s} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    text = " ".join(str(reason).split()) or type(reason).__name__
    return f"connection error: {text}"

"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that checks signatures,
records what it accepted, and fails or stalls on demand, so delivery is tested over a socket."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from microseg.activation.webhook import verify


class Receiver:
    """`with Receiver(secret) as receiver:` serves on `receiver.url` until the block ends.

    Every POST is checked against `secret`; a bad signature answers 401 and counts in
    `bad_signatures`. Every request's Idempotency-Key lands in `batch_keys` (retries included)
    and its headers and body in `posts`; only a request answered 200 adds its message keys to
    `keys` (a list: repeats show). Planned stalls (`stall_next`) and failures (`fail_next`) take
    the next requests, one plan each, stalls first: a stalled request records no keys, sleeps
    (until the block ends at most) and then answers 503.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.answer_after_s = 0.0  # accepted batches: keys kept at once, the answer this late
        self.keys: list[str] = []
        self.batch_keys: list[str] = []
        self.bad_signatures = 0
        self.posts: list[tuple[dict[str, str], bytes]] = []  # (headers, lower-cased names; body)
        self._lock = threading.Lock()
        self._failures: deque[int] = deque()
        self._stalls: deque[float] = deque()
        self._stopping = threading.Event()  # wakes stalled handlers when the block ends
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the receiver is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    @property
    def requests(self) -> int:
        """How many POSTs arrived (answered or not)."""
        with self._lock:
            return len(self.posts)

    def fail_next(self, code: int, times: int = 1) -> None:
        """Answer the next `times` requests with `code`, recording none of their keys."""
        with self._lock:
            self._failures.extend([code] * times)

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """Sleep `seconds` before answering the next `times` requests (then 503, nothing kept)."""
        with self._lock:
            self._stalls.extend([seconds] * times)

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format, *args) -> None:
                pass  # silence the per-request line on stderr

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: leaving the block waits for the loop to notice (0.5 s default).
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webhook-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        signed = verify(
            self.secret,
            request.headers.get("X-Microseg-Timestamp") or "",
            body,
            request.headers.get("X-Microseg-Signature"),
        )
        keys: list[str] | None = None
        # Decide everything under the lock before any sleep: a stalled request keeps nothing.
        with self._lock:
            self.posts.append(({k.lower(): v for k, v in request.headers.items()}, body))
            self.batch_keys.append(request.headers.get("Idempotency-Key") or "")
            if not signed:
                self.bad_signatures += 1
            stall = self._stalls.popleft() if self._stalls else None
            failure = self._failures.popleft() if stall is None and self._failures else None
            if stall is None and failure is None and signed:
                with contextlib.suppress(ValueError, KeyError, TypeError):  # not a batch: 400
                    keys = [m["idempotency_key"] for m in json.loads(body)["messages"]]
                if keys is not None:
                    self.keys.extend(keys)
        if keys is not None and self.answer_after_s:
            self._stopping.wait(self.answer_after_s)  # a sender killed meanwhile never hears
        if stall is not None:
            self._stopping.wait(stall)
            code = 503
        elif failure is not None:
            code = failure
        elif not signed:
            code = 401
        elif keys is None:
            code = 400
        else:
            code = 200
        self._answer(request, code)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, code: int) -> None:
        payload = json.dumps({"status": code}).encode("utf-8")
        try:
            request.send_response(code)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a stall past its timeout): nobody to answer

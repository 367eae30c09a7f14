"""`fundledger witness serve`: a c2sp.org/tlog-witness witness over HTTP.

A small ASGI application under uvicorn (h11). Routes, under ``prefix``:

* ``POST /add-checkpoint``: the tlog-witness call. :func:`witness.decide`
  decides, :func:`witness.http_status` gives the status code; 200 carries
  the cosignature line, every 409 the size this witness holds
  (``text/x.tlog.size``).
* ``GET /checkpoint/<origin, percent-encoded>``: the latest checkpoint this
  witness cosigned for that log, with its cosignature appended (404 for a
  log it does not witness, or has not cosigned yet).
* ``GET /metadata``: JSON naming this witness, its key, the statements
  its cosignatures make (an auditing witness: ``fundledger-audit/v1``
  besides cosignature/v1) and the logs it watches.
* ``GET /health``: 200 ``ok`` when the state opens (always at the root).

Limits, each refusal logged in one line on stderr: a request body of at
most ``max_body`` bytes (413), read within ``read_timeout`` seconds (408),
request headers within ``header_timeout`` (the connection is closed), a
token bucket per client address (429 with Retry-After), at most
``max_concurrent`` requests being decided at once (503 with Retry-After)
and ``max_connections`` connections (uvicorn answers 503 past that).
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

from ledger.errors import FundledgerError, InputError
from ledger.format import note
from ledger.ops import witness, witness_state

TEXT = b"text/plain; charset=utf-8"
SIZE = b"text/x.tlog.size"
JSON = b"application/json"
PLAIN_STATEMENT = ("the checkpoint is signed by the log key this witness holds for it at that size, and its tree "
                   "extends, append-only, every tree of the log this witness cosigned before")
MAX_CLIENTS = 10_000  # rate-limit buckets kept (the least recently used go first)


@dataclass(frozen=True)
class Limits:
    max_body: int = 64 << 10  # room for post-quantum signatures
    read_timeout: float = 10.0  # seconds to receive a whole request body
    header_timeout: float = 10.0  # seconds to receive a request's headers
    rate: float = 2.0  # requests per second per client, sustained
    burst: int = 20  # requests per client at once
    max_concurrent: int = 8  # requests being decided at once
    max_connections: int = 64

    def __post_init__(self):
        for name in ("read_timeout", "header_timeout", "rate"):
            v = getattr(self, name)
            if not 0 < v <= 86_400:
                raise InputError(f"--{name.replace('_', '-')} must be above 0 and at most 86400")
        for name in ("max_body", "burst", "max_concurrent", "max_connections"):
            if not 1 <= getattr(self, name) <= 1 << 30:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")


class RateLimiter:
    """A token bucket per client: ``burst`` requests at once, refilled at
    ``rate`` per second."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """0 if ``client`` may go on, else the seconds until it may."""
        tokens, last = self.buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1 if tokens >= 1 else tokens, now)
        while len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        return wait


class Refused(Exception):
    """A request refused before it reaches the witness's decision."""

    def __init__(self, status: int, reason: str, headers: list | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or []


def _line(text: str, limit: int = 300) -> str:
    """``text`` made safe for one line of the log."""
    out = "".join(c if c.isprintable() else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


class WitnessApp:
    """The ASGI application."""

    def __init__(self, signer: note.Signer, state_path: str, prefix: str = "", limits: Limits = Limits(),
                 log=None):
        self.signer, self.state_path, self.prefix, self.limits = signer, state_path, prefix.rstrip("/"), limits
        self.log = log or sys.stderr
        self.rate = RateLimiter(limits.rate, limits.burst)
        self.pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="witness")
        self.busy = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        client = (scope.get("client") or ("-", 0))[0]
        try:
            status, ctype, body, headers, reason = await self._route(scope, receive, method, path, client)
        except Refused as e:
            status, ctype, headers, reason = e.status, TEXT, e.headers, e.reason
            body = f"{e.reason}\n".encode()
        except Exception as e:  # a bug: one line, never a traceback to the client or the log
            status, ctype, headers, reason = 500, TEXT, [], f"internal error ({type(e).__name__}: {e})"
            body = b"internal error\n"
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        if status != 200 or reason:
            self.log.write(f"witness: {client} {_line(method, 16)} {_line(path, 200)} {status} {_line(reason)}\n")
            self.log.flush()

    async def _route(self, scope, receive, method, path, client):
        if path == "/health":
            _allow(method, ("GET", "HEAD"))
            await self._run(self._health)
            return 200, TEXT, b"ok\n", [], ""
        wait = self.rate.take(client, time.monotonic())
        if wait:
            raise Refused(429, "too many requests from this client",
                          [(b"retry-after", str(max(1, math.ceil(wait))).encode())])
        if path == self.prefix + "/add-checkpoint":
            _allow(method, ("POST",))
            body = await self._read_body(scope, receive)
            return await self._add_checkpoint(body)
        if path == self.prefix + "/metadata":
            _allow(method, ("GET", "HEAD"))
            return 200, JSON, await self._run(self._metadata), [(b"cache-control", b"no-store")], ""
        if path.startswith(self.prefix + "/checkpoint/"):
            _allow(method, ("GET", "HEAD"))
            origin = _origin(scope, self.prefix + "/checkpoint/")
            return 200, TEXT, await self._run(self._checkpoint, origin), [(b"cache-control", b"no-store")], ""
        raise Refused(404, "no such endpoint")

    async def _read_body(self, scope, receive) -> bytes:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body):
            raise Refused(413, f"request body over {self.limits.max_body} bytes")
        try:
            return await asyncio.wait_for(self._body(receive), self.limits.read_timeout)
        except asyncio.TimeoutError:
            raise Refused(408, f"request body not received within {self.limits.read_timeout:g} s") from None

    async def _body(self, receive) -> bytes:
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise Refused(400, "client disconnected before the end of the body")
            chunk = msg.get("body", b"")
            n += len(chunk)
            if n > self.limits.max_body:
                raise Refused(413, f"request body over {self.limits.max_body} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def _run(self, fn, *args):
        """``fn(*args)`` in a worker thread, at most ``max_concurrent`` at once."""
        if self.busy >= self.limits.max_concurrent:
            raise Refused(503, "too many requests at once", [(b"retry-after", b"1")])
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except witness_state.WitnessStateError as e:
            raise Refused(503, f"witness state unavailable: {e}", [(b"retry-after", b"5")]) from None
        finally:
            self.busy -= 1

    async def _decide(self, body: bytes) -> bytes:
        """:func:`witness.decide` in a worker thread, answered as soon as the
        cosignature is committed: what it leaves to do (saving an audit
        state, then letting the log's next request in) runs on in that
        thread after the answer, whatever happens to the request."""
        if self.busy >= self.limits.max_concurrent:
            raise Refused(503, "too many requests at once", [(b"retry-after", b"1")])
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self.busy += 1

        def work():
            after: list = []
            try:
                line, error = witness.decide(self.signer, self.state_path, body, None, None, after), None
            except BaseException as e:  # (handed to the request; a bug there is one 500 line)
                line, error = None, e
            loop.call_soon_threadsafe(_settle, answer, line, error)
            try:
                for fn in after:
                    fn()
            finally:
                loop.call_soon_threadsafe(self._done)

        self.pool.submit(work)
        try:
            return await answer
        except witness_state.WitnessStateError as e:
            raise Refused(503, f"witness state unavailable: {e}", [(b"retry-after", b"5")]) from None

    def _done(self) -> None:
        self.busy -= 1

    async def _add_checkpoint(self, body: bytes):
        try:
            line = await self._decide(body)
        except witness.WitnessConflict as e:
            return 409, SIZE, f"{e.size}\n".encode(), [], str(e)
        except FundledgerError as e:
            status = witness.http_status(e)
            extra = [(b"retry-after", b"5")] if status == 503 else []
            raise Refused(status, str(e), extra) from None
        return 200, TEXT, line, [], "cosigned"

    def _health(self) -> None:
        with witness_state.opened(self.state_path) as conn:
            witness_state.all_logs(conn)

    def _metadata(self) -> bytes:
        """What this witness is and what its cosignature says (docs/WITNESS.md)."""
        import json

        from ledger.format.policy import AUDIT_STATEMENT, AUDIT_STATEMENT_TEXT

        with witness_state.opened(self.state_path) as conn:
            auditing = witness_state.audit_key(conn) is not None
            logs, urls = witness_state.all_logs(conn), witness_state.audit_urls(conn)
        statements = [{"name": "cosignature/v1", "says": PLAIN_STATEMENT}]
        if auditing:
            statements.append({"name": AUDIT_STATEMENT, "says": AUDIT_STATEMENT_TEXT})
        v = self.signer.verifier()
        obj = {"name": v.name, "vkey": v.vkey(), "auditing": auditing, "statements": statements,
               "logs": [{"origin": log.origin, "size": log.size, "audited_from": urls.get(log.origin)}
                        for log in logs]}
        return (json.dumps(obj, indent=1) + "\n").encode()

    def _checkpoint(self, origin: str) -> bytes:
        with witness_state.opened(self.state_path) as conn:
            log = witness_state.get(conn, origin)
        if log is None:
            raise Refused(404, f"unknown log {origin[:100]!r}")
        if log.checkpoint is None or log.cosignature is None:
            raise Refused(404, f"no checkpoint of {origin[:100]!r} cosigned yet")
        return log.checkpoint.encode() + log.cosignature.encode()


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _origin(scope, route: str) -> str:
    """The origin after ``route`` in the raw path, percent-decoded once."""
    raw = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0].decode("latin-1")
    if not raw.startswith(route):
        raise Refused(400, "the origin must be percent-encoded (%2F for /)")
    try:
        origin = unquote(raw[len(route):], errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, "the origin is not percent-encoded UTF-8") from None
    if not origin:
        raise Refused(404, "no origin given")
    return origin


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise Refused(405, f"method {method[:16]} not allowed here", [(b"allow", ", ".join(allowed).encode())])


def _protocol(header_timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request headers
    have not all arrived ``header_timeout`` seconds after it opened or
    after its previous response."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        def _arm(self) -> None:
            cycle = self.cycle
            self.loop.call_later(header_timeout, lambda: self._expire(cycle))

        def _expire(self, cycle) -> None:
            if self.cycle is cycle and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

    return Protocol


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except (OSError, OverflowError) as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})") from None
    return sock


def serve(key_path: str, state_path: str, host: str = "127.0.0.1", port: int = 0, prefix: str = "",
          limits: Limits = Limits()) -> None:
    """Serve until SIGTERM or SIGINT. Prints ``witness listening on
    http://HOST:PORT/`` on stdout once the socket is bound."""
    import uvicorn

    signer = witness.load_witness_key(key_path)
    with witness_state.opened(state_path) as conn:  # fails early (exit 2); migrates a JSON state
        witness_state.all_logs(conn)
        own = witness_state.audit_key(conn)
    if own is not None and own != signer.verifier().vkey():
        raise InputError(f"{state_path!r} is the state of the auditing witness {own[:80]}: serve it with that key")
    if prefix and (not prefix.startswith("/") or "?" in prefix or "#" in prefix):
        raise InputError("--prefix must start with / (e.g. /witness)")
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    app = WitnessApp(signer, state_path, prefix, limits)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, server_header=False,
                            http=_protocol(limits.header_timeout), ws="none", timeout_keep_alive=5,
                            limit_concurrency=limits.max_connections, h11_max_incomplete_event_size=16 << 10)
    server = uvicorn.Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn re-raises the signal it stopped on: make that a no-op
        signal.signal(sig, lambda *_: None)
    print(f"witness listening on http://{shown}:{bound_port}/", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        app.pool.shutdown(wait=False, cancel_futures=True)
        sock.close()
    sys.stderr.write("witness: stopped\n")

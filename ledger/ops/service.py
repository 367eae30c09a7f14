"""``fundledger run``: the log as a service. A risk engine feeds it records
(the import's JSON Lines) at ``POST /add`` or on standard input; one writer
thread appends them under the same rules and the same exactly-once by
liquidation id as ``import``, and signs a checkpoint whenever the log grew,
at most every ``interval`` seconds, exporting the tiles first when asked
(``--export``) and asking the witnesses of ``--policy`` before publishing.

Acknowledged means durable: a reply names each record's seq (or
"duplicate") only after the transaction that wrote it committed with
``synchronous=FULL`` (ledger/store/store.py), and checkpoints are signed
only over committed entries. So after ``kill -9`` and a restart nothing
acknowledged is lost, and a client that retries what it was not told about
gets "duplicate" for what had landed: nothing is doubled.

One thread owns the database (SQLite connections stay on their thread);
HTTP requests wait on a bounded queue (full: 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ledger.errors import FundledgerError, InputError
from ledger.format.records import MAX_LINE_BYTES, parse_record
from ledger.store.store import MAX_BATCH

MAX_BODY_BYTES = 8 << 20
QUEUE_BODIES = 64  # bodies waiting for the writer before a 503
QUEUE_RECORDS = 50_000  # and records: the queue's memory stays bounded (tens of MB) whatever the load
HEALTHY_INTERVALS = 3  # a checkpoint this many intervals old (with entries it does not cover) is unhealthy


class BadBody(InputError):
    """A body with a bad line: nothing of it is written."""


@dataclass
class Health:
    covered_at: float = field(default_factory=time.monotonic)  # when the published checkpoint last covered the log
    size: int = 0
    published: int = 0
    error: str | None = None


def parse_body(body: bytes) -> list[dict]:
    """The records of a POST body (JSON Lines, at most MAX_BATCH lines);
    BadBody naming the first bad line."""
    if len(body) > MAX_BODY_BYTES:
        raise BadBody(f"a body is at most {MAX_BODY_BYTES} bytes")
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) > MAX_BATCH:
        raise BadBody(f"a body holds at most {MAX_BATCH} records")
    out = []
    for n, line in enumerate(lines, 1):
        try:
            if len(line) + 1 > MAX_LINE_BYTES:
                raise InputError(f"longer than {MAX_LINE_BYTES} bytes")
            out.append(parse_record(line))
        except FundledgerError as e:
            raise BadBody(f"line {n}: {e}") from None
    return out


class Writer:
    """The thread that owns the store: appends bodies in arrival order and
    signs checkpoints at most every ``interval`` seconds."""

    def __init__(self, open_store, signer, anchor, interval: float, export_dir: str | None, policy=None,
                 witness_interval: float | None = None, log=sys.stderr, pq_signer=None):
        self.open_store, self.store, self.signer, self.anchor = open_store, None, signer, anchor
        self.pq_signer = pq_signer
        self.interval, self.export_dir, self.policy = interval, export_dir, policy
        self.witness_interval = witness_interval or max(interval, 60.0)
        self.q: queue.Queue = queue.Queue(maxsize=QUEUE_BODIES)
        self.health = Health()
        self.stopping, self.stopped = threading.Event(), threading.Event()
        self.queued, self._count_lock = 0, threading.Lock()  # records in the queue
        self.log = log
        self.thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._last_cosigned = 0.0

    def submit(self, records: list[dict]) -> Future:
        """Queue a body; its future gives each record's seq or None (a
        replay). queue.Full when the writer is behind."""
        if self.stopped.is_set():
            raise queue.Full
        with self._count_lock:
            if self.queued + len(records) > QUEUE_RECORDS and self.queued:
                raise queue.Full
            f: Future = Future()
            self.q.put_nowait((records, f))
            self.queued += len(records)
        return f

    def _taken(self, records: list[dict]) -> None:
        with self._count_lock:
            self.queued -= len(records)

    def _run(self) -> None:
        self.store = self.open_store()  # on this thread: an SQLite connection stays on the thread that made it
        try:
            self._loop()
        except BaseException as e:  # a bug: said once, and /health turns unhealthy
            self.health.error = f"the writer stopped: {type(e).__name__}: {e}"
            self.log.write(f"run: {self.health.error}\n")
            self.log.flush()
            raise
        finally:
            self.stopped.set()

    def _loop(self) -> None:
        next_checkpoint = time.monotonic()
        while True:
            timeout = max(0.0, next_checkpoint - time.monotonic())
            try:
                records, f = self.q.get(timeout=timeout)
                self._taken(records)
            except queue.Empty:
                if self.stopping.is_set():
                    self._checkpoint()
                    return
                self._checkpoint()
                next_checkpoint = time.monotonic() + self.interval
                continue
            group = [(records, f)]
            total = len(records)
            while total < MAX_BATCH:  # group commit: what else waits, in one transaction
                try:
                    more = self.q.get_nowait()
                except queue.Empty:
                    break
                self._taken(more[0])
                if total + len(more[0]) > MAX_BATCH:
                    self._group([more])  # (rare: too big to join; on its own, in order after this group)
                    break
                group.append(more)
                total += len(more[0])
            self._group(group)

    def _group(self, group: list[tuple[list[dict], Future]]) -> None:
        """Append the bodies of ``group`` in one transaction (one commit, one
        anchor check); if any record is refused, body by body, so that a bad
        body fails alone, naming its line. Order is kept either way."""
        try:
            result = self.store.append([r for records, _ in group for r in records], [self.signer], anchor=self.anchor)
        except FundledgerError as e:
            if len(group) > 1:
                for body in group:
                    self._group([body])
                return
            index = getattr(e, "record_index", None)
            group[0][1].set_exception(e if index is None else BadBody(f"line {index + 1}: {e}"))
            return
        except Exception as e:  # a bug: these bodies fail, the service goes on
            for _, f in group:
                f.set_exception(e)
            return
        self.health.size = result.tree_size or self.store.size()
        at = 0
        for records, f in group:
            f.set_result(result.per_record[at:at + len(records)])
            at += len(records)

    def _checkpoint(self) -> None:
        """Sign (and export, and have cosigned) a checkpoint if the log grew;
        an idle log counts as covered, and with a policy is cosigned again
        every ``witness_interval``."""
        size = self.store.size()
        last = self.store.latest_checkpoint()
        published = 0 if last is None else last[1]
        now = time.monotonic()
        try:
            if size > published or (self.policy and now - self._last_cosigned >= self.witness_interval):
                published = self._sign(size, published)
            self.health.error = None
        except FundledgerError as e:
            self.health.error = str(e)
            self.log.write(f"run: checkpoint not published: {e}\n")
            self.log.flush()
        self.health.size, self.health.published = size, published
        if published >= size:
            self.health.covered_at = now

    def _sign(self, size: int, published: int) -> int:
        from ledger.ops import api, cosign
        from publish.export import export

        if self.policy is None:
            size, _, _ = api.checkpoint(self.store, self.signer, self.anchor, self.pq_signer)
            if self.export_dir is not None:
                export(self.store, self.export_dir)
            return size
        result = cosign.checkpoint_with_policy(self.store, self.signer, self.policy, self.anchor,
                                               export_dir=self.export_dir, pq_signer=self.pq_signer)
        self._last_cosigned = time.monotonic()
        if not result.published:
            failed = "; ".join(f"{o.name}: {o.reason}" for o in result.outcomes if not o.ok)
            raise InputError(f"quorum not met at size {result.tree_size} ({failed})")
        return result.tree_size

    def healthy(self) -> tuple[bool, dict]:
        h = self.health
        age = time.monotonic() - h.covered_at
        ok = h.error is None and age <= HEALTHY_INTERVALS * max(self.interval, 1.0) + 1.0
        return ok, {"ok": ok, "tree_size": h.size, "checkpoint_size": h.published,
                    "seconds_since_covered": round(age, 3), "error": h.error}


class AddApp:
    """The ASGI app: ``POST /add`` (bearer token) and ``GET /health``."""

    def __init__(self, writer: Writer, token: bytes | None, log=sys.stderr):
        self.writer, self.token, self.log = writer, token, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        status, body, headers = await self._route(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *headers]})
        await send({"type": "http.response.body", "body": body})
        if status != 200:
            self.log.write(f"run: {scope['method']} {scope['path'][:100]} {status} {body[:200].decode(errors='replace')}\n")
            self.log.flush()

    async def _route(self, scope, receive):
        method, path = scope["method"], scope["path"]
        if path == "/health" and method in ("GET", "HEAD"):
            ok, obj = self.writer.healthy()
            return (200 if ok else 503), _json(obj), []
        if path != "/add":
            return 404, _json({"error": "no such endpoint"}), []
        if method != "POST":
            return 405, _json({"error": "POST only"}), [(b"allow", b"POST")]
        if not self._authorized(scope):
            return 401, _json({"error": "a bearer token is required (--token-file)"}), [(b"www-authenticate", b"Bearer")]
        try:
            body = await _read(receive, scope)
            records = parse_body(body)
            f = self.writer.submit(records)
        except BadBody as e:
            return 400, _json({"error": str(e)}), []
        except queue.Full:
            return 503, _json({"error": "the writer is behind: retry"}), [(b"retry-after", b"1")]
        try:
            seqs = await asyncio.wrap_future(f)
        except FundledgerError as e:
            return 400, _json({"error": str(e)}), []
        except Exception as e:
            return 500, _json({"error": f"internal error ({type(e).__name__})"}), []
        return 200, _json({"results": [{"seq": s} if s is not None else {"duplicate": True} for s in seqs]}), []

    def _authorized(self, scope) -> bool:
        if self.token is None:
            return False
        got = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(got, b"Bearer " + self.token)


async def _read(receive, scope) -> bytes:
    length = dict(scope["headers"]).get(b"content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise BadBody(f"a body is at most {MAX_BODY_BYTES} bytes")
    chunks, n = [], 0
    while True:
        msg = await asyncio.wait_for(receive(), 30)
        if msg["type"] == "http.disconnect":
            raise BadBody("the client went away before the end of the body")
        chunk = msg.get("body", b"")
        n += len(chunk)
        if n > MAX_BODY_BYTES:
            raise BadBody(f"a body is at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _json(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _lines(fd: int):
    """The lines of file descriptor ``fd``, read with os.read: a buffered
    reader blocked in a daemon thread would abort the interpreter's exit."""
    import os

    pending = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if pending:
                yield pending
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
        if len(pending) > MAX_LINE_BYTES:
            yield pending  # refused as too long
            pending = b""


def read_stdin(writer: Writer, fd: int, out) -> None:
    """Records on standard input, one line each, each acknowledged by one
    JSON line on ``out`` once durable (or refused, naming the line)."""
    for n, line in enumerate(_lines(fd), 1):
        try:
            records = parse_body(line)
            if not records:
                continue
            while True:
                try:
                    f = writer.submit(records)
                    break
                except queue.Full:
                    time.sleep(0.05)
            (seq,) = f.result()
            reply = {"line": n, "seq": seq} if seq is not None else {"line": n, "duplicate": True}
        except FundledgerError as e:
            reply = {"line": n, "error": str(e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def read_token(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            token = f.read(4097).strip()
    except OSError as e:
        raise InputError(f"{path!r}: {e.strerror}") from None
    if not 16 <= len(token) <= 4096 or not token.isascii() or b" " in token:
        raise InputError(f"{path!r}: a token is 16 to 4096 printable ASCII characters without spaces")
    return token


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise InputError(f"--listen {value[:60]!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def serve(open_store, signer, anchor, listen: str, token_file: str | None, export_dir: str | None, interval: float,
          policy=None, witness_interval: float | None = None, pq_signer=None) -> None:
    """Run until SIGTERM or SIGINT: the writer, standard input (when it is
    not a terminal) and ``POST /add``; then finish the queue, sign a last
    checkpoint, and return. Prints ``run listening on http://HOST:PORT/``
    on stderr once the socket is bound."""
    import signal

    import uvicorn

    from ledger.ops.witness_http import listen as bind

    token = read_token(token_file)
    host, port = parse_listen(listen)
    sock = bind(host, port)
    writer = Writer(open_store, signer, anchor, interval, export_dir, policy, witness_interval, pq_signer=pq_signer)
    writer.thread.start()
    if not sys.stdin.isatty():
        threading.Thread(target=read_stdin, args=(writer, sys.stdin.fileno(), sys.stdout), daemon=True).start()
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(AddApp(writer, token), lifespan="off", log_level="warning", access_log=False,
                            server_header=False, ws="none", timeout_keep_alive=5, limit_concurrency=256)
    server = uvicorn.Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn re-raises the signal it stopped on: make that a no-op
        signal.signal(sig, lambda *_: None)
    sys.stderr.write(f"run listening on http://{bound_host}:{bound_port}/\n")
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        writer.stopping.set()
        writer.thread.join(timeout=120)
    sys.stderr.write("run: stopped\n")

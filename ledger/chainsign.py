"""The sequential part of a bulk import: signing the hash chain.

Entry N+1's text holds ``prev = base64(SHA-256(0x00 || entry N's bytes))``,
so entries are signed strictly one after another. Everything else about an
entry (parsing, the fund rules, canonical JSON, SQLite) does not depend on
``prev``, so the importer builds each entry's text as two *templates* around
it, ``pre`` (up to and including ``"prev":"``) and ``post`` (from the closing
quote of ``prev`` to the end of the JSON line, without the newline), and a
chain signer runs only this loop::

    text = pre + base64(prev) + post + "\\n"
    data = text + "\\n" + "— <origin> " + base64(key id || Ed25519(text)) + "\\n"
    prev = SHA-256(0x00 || data)

which gives, byte for byte, what ``entry.sign_entry(entry.entry_text(...))``
gives for the same entry (``note.sign_note`` with one Ed25519 signer).

Two chain signers share that loop (:func:`sign_chain`):

* :class:`InlineChain` signs in the calling process;
* :class:`ProcessChain` runs it in a child process (``python -c`` importing
  this module only, no SQLite), so that signing takes one core while the
  importer parses, checks and writes on the other. The private key goes to
  the child through its standard input, never through a file, argv or the
  environment. Requests and results are length-prefixed frames on pipes; the
  parent bounds what is in flight so neither side can block the other.

A chain signer never touches the database: the importer inserts only whole
batches whose every signature came back, inside its own write transaction.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import select
import struct
import subprocess
import sys
import tempfile
from array import array

from nacl.bindings import crypto_sign

from .errors import StoreError

_SIG_PREFIX = "\u2014 ".encode()  # as note._SIG_PREFIX
_U32 = struct.Struct("<I")
_START, _CONTINUE = b"S", b"C"
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032  # Linux fcntl
_PIPE_SIZE = 1 << 20


def sig_line_length(name: str) -> int:
    """Bytes after ``text`` in an entry: the blank line and one signature line."""
    return 1 + len(_SIG_PREFIX) + len(name.encode("utf-8")) + 1 + 92 + 1  # base64 of 4 + 64 bytes is 92


def sign_chain(pieces: list[bytes], prev: bytes, sk: bytes, kid: bytes, sep: bytes) -> tuple[list[bytes], list[bytes]]:
    """Sign ``pieces`` (``pre0, post0, pre1, post1, ...``) in order from the
    leaf hash ``prev``; returns ``(entry bytes, leaf hashes)``."""
    b2a = binascii.b2a_base64
    sha = hashlib.sha256
    sign = crypto_sign
    datas: list[bytes] = []
    leaves: list[bytes] = []
    add_data, add_leaf = datas.append, leaves.append
    it = iter(pieces)
    for pre, post in zip(it, it):
        text = pre + b2a(prev, newline=False) + post + b"\n"
        data = text + sep + b2a(kid + sign(text, sk)[:64])  # b2a_base64 ends the line with "\n"
        prev = sha(b"\x00" + data).digest()
        add_data(data)
        add_leaf(prev)
    return datas, leaves


def _sep(name: str) -> bytes:
    return b"\n" + _SIG_PREFIX + name.encode("utf-8") + b" "


class _Spool:
    """Length-prefixed frames in an unlinked temporary file: written at the
    end, read back in order (positional I/O, so both can interleave)."""

    def __init__(self):
        self._f = tempfile.TemporaryFile()
        self._fd = self._f.fileno()
        self._end = 0
        self._pos = 0
        self.frames = 0  # written and not yet read

    def put(self, body: bytes) -> None:
        data = _U32.pack(len(body)) + body
        n = os.pwrite(self._fd, data, self._end)
        while n < len(data):  # pragma: no cover (regular files write whole)
            n += os.pwrite(self._fd, data[n:], self._end + n)
        self._end += len(data)
        self.frames += 1

    def get(self) -> bytes:
        (n,) = _U32.unpack(os.pread(self._fd, 4, self._pos))
        body = os.pread(self._fd, n, self._pos + 4)
        if len(body) != n:  # pragma: no cover
            raise StoreError("import spool truncated")
        self._pos += 4 + n
        self.frames -= 1
        return body

    def close(self) -> None:
        self._f.close()


class InlineChain:
    """Signs in this process, at once; the same interface as ProcessChain.
    Results wait in a spool file until the write pass takes them."""

    def __init__(self, signer):
        self._sk = signer._sk
        self._kid = signer.key_id
        self._sep = _sep(signer.name)
        self._prev: bytes | None = None
        self._spool = _Spool()

    def start(self, prev: bytes) -> None:
        self._prev = prev

    def send(self, pieces: list[bytes]) -> None:
        datas, leaves = sign_chain(pieces, self._prev, self._sk, self._kid, self._sep)
        if leaves:
            self._prev = leaves[-1]
        self._spool.put(_encode_result(datas, leaves))

    def pump(self) -> None:
        pass

    def recv(self) -> tuple[list[bytes], list[bytes]]:
        return _decode_result(self._spool.get())

    def close(self) -> None:
        self._spool.close()


class ProcessChain:
    """Signs in a child process. ``send`` queues a request and never blocks
    (up to MAX_BACKLOG bytes of requests not yet taken by the child);
    ``pump`` moves requests to the child and its results to a spool file
    without blocking; ``recv`` returns the results of the oldest request not
    yet returned, waiting for them if needed."""

    MAX_BACKLOG = 32 << 20

    def __init__(self, signer):
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = f"import sys; sys.path.insert(0, {pkg_parent!r}); from ledger.chainsign import _child; _child()"
        self._p = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, bufsize=0,
        )
        self._w = self._p.stdin.fileno()
        self._r = self._p.stdout.fileno()
        _grow_pipe(self._w)
        _grow_pipe(self._r)
        self._backlog = bytearray()  # request frames not yet written to the child
        self._buf = bytearray()  # result bytes read, not yet a whole frame
        self._sent = 0  # requests queued
        self._spool = _Spool()
        self._received = 0  # result frames spooled
        self._first = True
        self._pending_start = b""
        key = signer.seed + signer.key_id + signer.name.encode("utf-8")
        self._write_all(_U32.pack(len(key)) + key)  # the key, through the pipe only
        del key
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._w, view):]
        except OSError:
            self._fail()

    def _fail(self):
        err = b""
        try:
            self._p.kill()
            _, err = self._p.communicate(timeout=5)
        except Exception:
            pass
        last = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
        raise StoreError("the signing process failed" + (f": {last[0][:200]}" if last else ""))

    def start(self, prev: bytes) -> None:
        self._pending_start = prev
        self._first = True

    def send(self, pieces: list[bytes]) -> None:
        if self._first:
            head = _START + self._pending_start
            self._first = False
        else:
            head = _CONTINUE
        body = head + b"\n".join(pieces)
        self._backlog += _U32.pack(len(body))
        self._backlog += body
        self._sent += 1
        self.pump()
        while len(self._backlog) > self.MAX_BACKLOG:
            self._wait()

    def pump(self) -> None:
        """Move what can move now, without blocking."""
        if self._backlog:
            try:
                n = os.write(self._w, self._backlog)
            except BlockingIOError:
                n = 0
            except OSError:
                self._fail()
            del self._backlog[:n]
        while True:
            try:
                chunk = os.read(self._r, 1 << 20)
            except BlockingIOError:
                return
            if not chunk:
                self._fail()
            self._buf += chunk
            self._frames()

    def _wait(self) -> None:
        """Block until the child can take requests or has sent results."""
        select.select([self._r], [self._w] if self._backlog else [], [], 5.0)
        if self._p.poll() is not None:
            self.pump()  # reads what is left, then fails on end of file
        self.pump()

    def recv(self) -> tuple[list[bytes], list[bytes]]:
        while not self._spool.frames:
            if self._received >= self._sent:
                raise StoreError("internal error: no signing request in flight")
            self._wait()
        return _decode_result(self._spool.get())

    def _frames(self) -> None:
        buf = self._buf
        while len(buf) >= 4:
            (n,) = _U32.unpack_from(buf)
            if len(buf) < 4 + n:
                return
            self._spool.put(bytes(buf[4 : 4 + n]))
            del buf[: 4 + n]
            self._received += 1

    def close(self) -> None:
        p = self._p
        if p.poll() is None and self._received < self._sent:
            p.kill()  # abandoned work: no need to let it finish
        if p.poll() is None:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                f.close()
            except OSError:
                pass
        self._spool.close()

    def kill(self) -> None:
        if self._p.poll() is None:
            self._p.kill()
        self.close()


def _grow_pipe(fd: int) -> int:
    try:
        import fcntl

        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass
        return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except (ImportError, OSError):
        return 65536


def _encode_result(datas: list[bytes], leaves: list[bytes]) -> bytes:
    lens = array("I", map(len, datas))
    if sys.byteorder != "little":  # pragma: no cover
        lens.byteswap()
    return _U32.pack(len(datas)) + lens.tobytes() + b"".join(leaves) + b"".join(datas)


def _decode_result(body: bytes) -> tuple[list[bytes], list[bytes]]:
    (n,) = _U32.unpack_from(body)
    lens = array("I")
    lens.frombytes(body[4 : 4 + 4 * n])
    if sys.byteorder != "little":  # pragma: no cover
        lens.byteswap()
    pos = 4 + 4 * n
    leaves = [body[i : i + 32] for i in range(pos, pos + 32 * n, 32)]
    pos += 32 * n
    datas = []
    for ln in lens:
        datas.append(body[pos : pos + ln])
        pos += ln
    if pos != len(body):
        raise StoreError("the signing process sent a malformed result")
    return datas, leaves


def _read_exact(f, n: int) -> bytes | None:
    out = f.read(n)
    if not out:
        return None
    while len(out) < n:
        more = f.read(n - len(out))
        if not more:
            raise EOFError("truncated request")
        out += more
    return out


def _child() -> None:
    """The signing process: key frame, then request frames until EOF."""
    from .note import Signer

    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    head = _read_exact(inp, 4)
    if head is None:
        return
    key = _read_exact(inp, _U32.unpack(head)[0])
    signer = Signer(key[36:].decode("utf-8"), key[32:36], key[:32])
    del key
    sk, kid, sep = signer._sk, signer.key_id, _sep(signer.name)
    prev = None
    while True:
        head = _read_exact(inp, 4)
        if head is None:
            return
        body = _read_exact(inp, _U32.unpack(head)[0])
        if body[:1] == _START:
            prev, body = body[1:33], body[33:]
        elif body[:1] == _CONTINUE and prev is not None:
            body = body[1:]
        else:
            raise ValueError("bad request")
        datas, leaves = sign_chain(body.split(b"\n"), prev, sk, kid, sep)
        if leaves:
            prev = leaves[-1]
        res = _encode_result(datas, leaves)
        out.write(_U32.pack(len(res)) + res)
        out.flush()

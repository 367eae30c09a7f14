"""The sequential part of a bulk import: signing the hash chain.

Entry N+1's text holds ``prev = base64(SHA-256(0x00 || entry N's bytes))``,
so entries are signed strictly one after another. Everything else about an
entry (parsing, the fund rules, canonical JSON) does not depend on ``prev``,
so the importer builds each entry's text as two *templates* around it,
``pre`` (up to and including ``"prev":"``) and ``post`` (from the closing
quote of ``prev`` to the end of the JSON line, without the newline), and a
chain signer runs only this loop::

    text = pre + base64(prev) + post + "\\n"
    data = text + "\\n" + "— <origin> " + base64(key id || Ed25519(text)) + "\\n"
    prev = SHA-256(0x00 || data)

which gives, byte for byte, what ``entry.sign_entry(entry.entry_text(...))``
gives for the same entry (``note.sign_note`` with one Ed25519 signer). The
same loop also adds each leaf to the Merkle tree's right edge (RFC 6962
section 2.1, as ``merkle.TreeBuilder``) and turns the entry into the rows
the store inserts: the ``entries`` row (``seq``, the bytes, the leaf hash,
then the derived columns the importer computed, sent along as a *rest
line*) and the ``tree`` rows of the nodes the leaf completes. So the
importing process only inserts rows it gets ready-made (:func:`sign_batch`).

Two chain signers share that loop:

* :class:`InlineChain` signs in the calling process;
* :class:`ProcessChain` runs it in a child process (``python -c`` importing
  this module only, no SQLite), so that signing takes one core while the
  importer parses, checks and writes on the other. The private key goes to
  the child through its standard input, never through a file, argv or the
  environment. Requests and results are length-prefixed frames in two
  unlinked temporary files the child inherits; the pipes carry only each
  frame's length, so neither side ever waits for the other to make room.

Results travel as :mod:`marshal` frames (a list of row tuples is read back
in C, about 0.75 µs an entry; docs/PERFORMANCE.md). marshal trusts its
input, and it only ever reads frames this code wrote, from an unlinked
temporary file that only this process and its signing child hold.

In format 2 (docs/FORMAT.md) a liquidation also names the leaf hash of
its fund's previous entry (``chain_prev``). When that entry is older than
the import, the importer writes the hash into the text itself; when it is
one of the import's own, the hash is known only once that entry is signed,
so the text has a second hole, and the item says which seq's leaf goes in
it (:func:`sign_batch_2`): items are then five, ``pre, mid, post, rest,
ref``, and the text is ``pre + base64(leaf of ref) + mid + base64(prev) +
post`` (without the first hole when ``ref`` is empty). The signer keeps the
leaf of each entry until the one entry that names it is signed: at most
one per fund.

A chain signer never touches the database: the importer inserts only whole
batches whose every signature came back, inside its own write transaction.
"""

from __future__ import annotations

import binascii
import hashlib
import marshal
import os
import select
import struct
import subprocess
import sys
import tempfile

from nacl.bindings import crypto_sign

from ledger.errors import InvariantError, StoreError
from ledger.format.note import ED25519_SIG_SIZE, KEY_ID_SIZE, SIG_PREFIX, Signer
from ledger.tlog import merkle

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_START, _START_2, _CONTINUE = b"S", b"T", b"C"  # T: a format-2 chain (five items an entry)


def sign_batch(items: list[bytes], seq: int, prev: bytes, edge: list[bytes], sk: bytes, kid: bytes,
               sep: bytes, leaves: dict[int, bytes] | None = None) -> tuple[list[tuple], list[tuple], bytes]:
    """Sign ``items`` (``pre0, post0, rest0, pre1, ...``) in order, the first
    as entry ``seq`` after the leaf hash ``prev``, on a tree whose right edge
    (``merkle.TreeBuilder``'s stack) is ``edge``, updated in place. Returns
    ``(entries rows, tree rows, the last leaf hash)``; a rest line is the
    derived columns after ``(seq, data, leaf_hash)``, tab-separated, None as
    empty (see ``importer._rest_line``).

    With ``leaves`` (a format-2 chain) the items are ``pre, mid, post, rest,
    ref`` (see the module docstring) and ``leaves`` holds, across calls, the
    leaf of each entry signed that no entry has named yet."""
    b2a = binascii.b2a_base64
    sha = hashlib.sha256
    sign = crypto_sign
    rows: list[tuple] = []
    tree_rows: list[tuple] = []
    add_row, add_tree = rows.append, tree_rows.append
    pop, push = edge.pop, edge.append
    sig_size = ED25519_SIG_SIZE  # crypto_sign returns the signature, then the message
    idx = merkle.leaf_stored_index(seq)
    it = iter(items)
    for pre, post, rest in _entries(it, leaves):
        text = pre + b2a(prev, newline=False) + post + b"\n"
        data = text + sep + b2a(kid + sign(text, sk)[:sig_size])  # b2a_base64 ends the line with "\n"
        prev = h = sha(b"\x00" + data).digest()
        if leaves is not None:
            leaves[seq] = h
        add_row((seq, data, prev) + tuple([x or None for x in rest.decode("ascii").split("\t")]))
        # the nodes this leaf completes (merkle.TreeBuilder.extend), under
        # the stored-hash indexes after the leaf's, idx; the next leaf is
        # stored right after them (merkle.stored_hashes_added)
        k = seq
        while k & 1:
            h = sha(b"\x01" + pop() + h).digest()
            idx += 1
            add_tree((idx, h))
            k >>= 1
        push(h)
        idx += 1
        seq += 1
    return rows, tree_rows, prev


def _entries(it, leaves: dict[int, bytes] | None):
    """``(pre, post, rest)`` of each item: three at a time, or five of a
    format-2 chain with the named leaf put in its hole (popped: each entry
    is named by one entry at most)."""
    if leaves is None:
        return zip(it, it, it)
    return _linked(it, leaves)


def _linked(it, leaves: dict[int, bytes]):
    b2a = binascii.b2a_base64
    for pre, mid, post, rest, ref in zip(it, it, it, it, it):
        if ref:
            link = leaves.pop(int(ref), None)
            if link is None:
                raise InvariantError(f"an entry names the leaf of entry {ref.decode('ascii', 'replace')[:20]}, "
                                 "which this chain does not hold")
            pre = pre + b2a(link, newline=False) + mid
        yield pre, post, rest


class _ChainState:
    """Where the chain stands between two requests."""

    def __init__(self, seq: int, prev: bytes, edge: list[bytes], fmt2: bool = False):
        self.seq, self.prev, self.edge = seq, prev, list(edge)
        self.leaves: dict[int, bytes] | None = {} if fmt2 else None

    def sign(self, items: list[bytes], sk: bytes, kid: bytes, sep: bytes) -> bytes:
        """One request signed: its result frame body."""
        rows, tree_rows, prev = sign_batch(items, self.seq, self.prev, self.edge, sk, kid, sep, self.leaves)
        self.seq += len(rows)
        self.prev = prev
        return marshal.dumps((rows, tree_rows))


def _start_frame(seq: int, prev: bytes, edge: list[bytes]) -> bytes:
    """What a chain needs to start on: the size, the head's leaf hash, the edge."""
    return _U64.pack(seq) + prev + bytes([len(edge)]) + b"".join(edge)


def _parse_start(body: bytes, fmt2: bool = False) -> tuple[_ChainState, bytes]:
    if len(body) < 41 or len(body) < 41 + 32 * body[40]:
        raise ValueError("bad start")
    (seq,) = _U64.unpack_from(body)
    prev, n = body[8:40], body[40]
    edge = [body[41 + 32 * i : 73 + 32 * i] for i in range(n)]
    return _ChainState(seq, prev, edge, fmt2), body[41 + 32 * n :]


def _decode_result(body: bytes) -> tuple[list[tuple], list[tuple]]:
    try:
        rows, tree_rows = marshal.loads(body)
    except (ValueError, EOFError, TypeError) as e:
        raise StoreError("the signing process sent a malformed result") from e
    if type(rows) is not list or type(tree_rows) is not list:
        raise StoreError("the signing process sent a malformed result")
    return rows, tree_rows


def _sep(name: str) -> bytes:
    return b"\n" + SIG_PREFIX + name.encode("utf-8") + b" "


class _Spool:
    """Length-prefixed frames in an unlinked temporary file: written at the
    end (by this process with :meth:`put`, or by a child process sharing
    the file, which reports each frame's length, :meth:`written`), read back
    in order with positional I/O, so both can interleave."""

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

    def written(self, n: int) -> None:
        """Another process appended a frame of ``n`` bytes (after its length)."""
        self._end += 4 + n
        self.frames += 1

    def fileno(self) -> int:
        return self._fd

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
        self._state: _ChainState | None = None
        self._spool = _Spool()

    def start(self, seq: int, prev: bytes, edge: list[bytes], fmt2: bool = False) -> None:
        self._state = _ChainState(seq, prev, edge, fmt2)

    def send(self, items: list[bytes]) -> None:
        self._spool.put(self._state.sign(items, self._sk, self._kid, self._sep))

    def pump(self) -> None:
        pass

    def recv(self) -> tuple[list[tuple], list[tuple]]:
        return _decode_result(self._spool.get())

    def close(self) -> None:
        self._spool.close()


class ProcessChain:
    """Signs in a child process. ``send`` queues a request and never blocks;
    ``pump`` tells the child about queued requests and takes its reports
    without blocking; ``recv`` returns the results of the oldest request not
    yet returned, waiting for them if needed.

    Both directions go through unlinked temporary files the child inherits
    the descriptors of: requests are appended to one and results to the
    other, and each side only sends the other a frame's length on a pipe.
    So neither side ever waits for the other to make room, the only memory
    in flight is four bytes a request, and no frame is copied through a
    pipe. The import needs temporary space for both (docs/OPERATOR.md)."""

    def __init__(self, signer):
        pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._requests = _Spool()
        self._spool = _Spool()
        fds = (self._requests.fileno(), self._spool.fileno())
        code = (f"import sys; sys.path.insert(0, {pkg_parent!r}); "
                f"from ledger.store.sign import _child; _child({fds[0]}, {fds[1]})")
        try:
            self._p = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                close_fds=True, pass_fds=fds, bufsize=0,
            )
        except BaseException:
            self._requests.close()
            self._spool.close()
            raise
        self._w = self._p.stdin.fileno()
        self._r = self._p.stdout.fileno()
        self._notes = bytearray()  # request lengths not yet written to the child
        self._buf = bytearray()  # report bytes read, not yet a whole one
        self._sent = 0  # requests queued
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

    def start(self, seq: int, prev: bytes, edge: list[bytes], fmt2: bool = False) -> None:
        self._pending_start = (_START_2 if fmt2 else _START) + _start_frame(seq, prev, edge)
        self._first = True

    def send(self, items: list[bytes]) -> None:
        if self._first:
            head = self._pending_start
            self._first = False
        else:
            head = _CONTINUE
        body = head + b"\n".join(items)
        self._requests.put(body)
        self._notes += _U32.pack(len(body))
        self._sent += 1
        self.pump()

    def pump(self) -> None:
        """Move what can move now, without blocking."""
        if self._notes:
            try:
                n = os.write(self._w, self._notes)
            except BlockingIOError:
                n = 0
            except OSError:
                self._fail()
            del self._notes[:n]
        while True:
            try:
                chunk = os.read(self._r, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self._fail()
            self._buf += chunk
            self._reports()

    def _wait(self) -> None:
        """Block until the child can take requests or has sent results."""
        select.select([self._r], [self._w] if self._notes else [], [], 5.0)
        if self._p.poll() is not None:
            self.pump()  # reads what is left, then fails on end of file
        self.pump()

    def recv(self) -> tuple[list[tuple], list[tuple]]:
        while not self._spool.frames:
            if self._received >= self._sent:
                raise StoreError("internal error: no signing request in flight")
            self._wait()
        return _decode_result(self._spool.get())

    def _reports(self) -> None:
        buf = self._buf
        whole = len(buf) - len(buf) % 4
        for (n,) in _U32.iter_unpack(buf[:whole]):
            self._spool.written(n)
            self._received += 1
        del buf[:whole]

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
        self._requests.close()
        self._spool.close()

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


def _child(requests_fd: int, spool_fd: int) -> None:
    """The signing process: the key frame on standard input, then the
    length of each request, read from the file ``requests_fd`` in order,
    until end of input; each result frame is appended to the file
    ``spool_fd`` and its length reported on standard output."""
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    head = _read_exact(inp, 4)
    if head is None:
        return
    key = _read_exact(inp, _U32.unpack(head)[0])
    seed, kid = key[:32], key[32 : 32 + KEY_ID_SIZE]  # the frame: seed, key id, name
    signer = Signer(key[32 + KEY_ID_SIZE :].decode("utf-8"), kid, seed)
    del key
    sk, kid, sep = signer._sk, signer.key_id, _sep(signer.name)
    state = None
    pos = 0
    while True:
        head = _read_exact(inp, 4)
        if head is None:
            return
        n = _U32.unpack(head)[0]
        frame = os.pread(requests_fd, 4 + n, pos)
        if len(frame) != 4 + n or frame[:4] != head:
            raise ValueError("bad request")
        pos += 4 + n
        body = frame[4:]
        if body[:1] in (_START, _START_2):
            state, body = _parse_start(body[1:], body[:1] == _START_2)
        elif body[:1] == _CONTINUE and state is not None:
            body = body[1:]
        else:
            raise ValueError("bad request")
        res = state.sign(body.split(b"\n"), sk, kid, sep)
        head = _U32.pack(len(res))
        data = memoryview(head + res)
        while data:  # a regular file takes it whole; this does not rely on it
            data = data[os.write(spool_fd, data):]
        out.write(head)
        out.flush()

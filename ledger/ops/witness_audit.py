"""The audit an auditing witness makes before it cosigns (docs/WITNESS.md,
"Auditing witnesses").

For a log added with ``witness add-log VKEY --audit URL``, :func:`audit`
reads the new entries from the log's entry bundles at URL and replays them
with the incremental verifier (:func:`ledger.verify.run.verify`, from a
:class:`~ledger.verify.state.VerifierState` of the witness's own): every
fund rule and every format-2 commitment, authenticated against the root of
the checkpoint in the add-checkpoint request (never URL/checkpoint: a log
publishes its checkpoint only once witnesses cosigned it). The cost follows
the new entries: the bundles from the audited size on, and the state file's
index for the liquidation ids.

The audit state of each log is ``<state>.audit/<hash of the origin>.state``
beside the witness's state. It is saved only after the cosignature is
committed (:meth:`Audit.save`), so it is never ahead of what was cosigned;
a crash in between leaves it behind, and the next request audits from
there (the entries in between are under the new checkpoint's root too).
Requests for one log are decided one at a time (:func:`locked`), so an
audit never reads an id table another request is writing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ledger.errors import FundledgerError, InputError, VerificationError
from ledger.format import note
from ledger.format.policy import AUDIT_STATEMENT
from ledger.ops.witness_state import LogState, WitnessStateError
from ledger.verify import transport
from ledger.verify.sources import DirSource, Source, UrlSource, _FileTree

DEADLINES = transport.Deadlines(request_s=30.0, stall_s=10.0)  # per file fetched from the log
RECENT_BYTES = 16 << 20  # bundles kept for the reference's second reading of a chunk (one is at most 16 MiB)
LOCK_WAIT_S = 5.0  # a request waits this long for another one auditing the same log, then 503
__all__ = ["AUDIT_STATEMENT", "Audit", "AuditFailed", "AuditUnavailable", "audit", "check_url", "locked"]


class AuditFailed(VerificationError):
    """The new entries break a rule or a commitment (422, exit 1): ``seq``
    is the first bad one."""

    http_status = 422


class AuditUnavailable(VerificationError):
    """The entries could not be read from the log's URL, or another request
    is auditing the same log (503 with Retry-After, exit 1): nothing was
    cosigned; retry once the tiles are published."""

    http_status = 503


class _FetchFailed(VerificationError):
    pass


def check_url(url: str) -> str:
    """``--audit URL``: an http(s) URL, or a directory (kept as its real path)."""
    if url.startswith(("http://", "https://")):
        UrlSource(url)  # parses it, fetches nothing
        return url
    if os.path.isdir(url):
        return os.path.realpath(url)
    raise InputError(f"--audit {url!r}: not an http(s) URL or a directory holding the log's tiles")


def state_path(witness_state: str, origin: str) -> str:
    """Where the audit state of ``origin`` is kept, beside the witness's state."""
    name = hashlib.sha256(origin.encode()).hexdigest()[:32]
    return os.path.join(f"{witness_state}.audit", f"{name}.state")


@contextmanager
def locked(witness_state: str, origin: str, wait_s: float = LOCK_WAIT_S):
    """One request at a time for ``origin`` (threads and processes alike)."""
    path = state_path(witness_state, origin) + ".lock"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise WitnessStateError(f"{path!r}: cannot keep the audit state there ({e.strerror})") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AuditUnavailable("another request is auditing this log: retry") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # (releases the lock)


class _RequestSource(_FileTree):
    """The log at URL, but with the checkpoint of the request: every entry
    read is authenticated against that root by the replay. Counts what it
    reads; a file it cannot read is :class:`_FetchFailed`."""

    def __init__(self, inner: Source, checkpoint: bytes):
        self.inner, self._checkpoint = inner, checkpoint
        self.description = inner.description
        self.files = self.bytes = 0
        self._recent: dict[str, bytes] = {}  # the bundles read last: the replay reads a chunk's again

    def vkey(self) -> str | None:
        return None  # the witness holds the log's key

    def checkpoint(self) -> bytes:
        return self._checkpoint

    def fetch(self, path: str, limit: int) -> bytes:
        if path in self._recent:
            return self._recent[path]
        try:
            data = self.inner.fetch(path, limit)
        except FundledgerError as e:
            raise _FetchFailed(f"cannot read {path} from {self.inner.description}: {e}") from None
        if data is None:
            raise _FetchFailed(f"{path} is not published at {self.inner.description}: publish the tiles and "
                               "entry bundles of a checkpoint before asking for its cosignature")
        self.files += 1
        self.bytes += len(data)
        self._recent[path] = data
        while sum(map(len, self._recent.values())) > RECENT_BYTES:
            del self._recent[next(iter(self._recent))]
        return data

    def spec(self) -> tuple:
        return self.inner.spec()

    def close(self) -> None:
        if not isinstance(self.inner, UrlSource):  # kept open for the next request (_url_source)
            self.inner.close()


_SOURCES: dict[tuple[str, str], UrlSource] = {}
_SOURCES_LOCK = threading.Lock()
MAX_SOURCES = 64


def _url_source(origin: str, url: str) -> UrlSource:
    """One client per audited log in this process, reused by its next
    requests (their connections kept alive, no TLS context built again); a
    log's requests are decided one at a time (:func:`locked`), so no two
    threads use one client at once."""
    with _SOURCES_LOCK:
        src = _SOURCES.pop((origin, url), None) or UrlSource(url, DEADLINES)
        _SOURCES[(origin, url)] = src
        while len(_SOURCES) > MAX_SOURCES:  # (not closed here: its log's request may be using it)
            del _SOURCES[next(iter(_SOURCES))]
        return src


@dataclass
class Audit:
    """An audit that passed: what it read, and the state to save once the
    cosignature is committed."""

    origin: str
    path: str
    entries: int
    files: int
    bytes: int
    report: object

    def save(self) -> bool:
        """Save the audit state; False if it could not be (another request
        saved first, or the disk refused): it then stays behind, which is
        safe, and the next audit starts from it."""
        try:
            self.report.state.dump(self.path)
            return True
        except (FundledgerError, OSError):
            return False

    def close(self) -> None:
        """Close the audit state file the replay read its ids from."""
        _close_state(self.report.state)


def _close_state(state) -> None:
    conn = getattr(getattr(state, "hashes", None), "conn", None)
    if conn is not None:
        conn.close()


def audit(witness_state: str, url: str, log: LogState, checkpoint: bytes) -> Audit:
    """Replay the entries of ``checkpoint`` (the request's, its signature and
    consistency checked already) after those this witness audited, from the
    log's tiles at ``url``; :class:`AuditFailed` names the first bad seq."""
    from ledger.verify.state import VerifierState

    path = state_path(witness_state, log.origin)
    try:
        resume = VerifierState.load(path) if os.path.lexists(path) else None
    except InputError as e:
        raise WitnessStateError(f"the audit state of {log.origin}: {e}") from None
    if resume is not None and resume.tree_size > log.size:
        _close_state(resume)
        raise WitnessStateError(f"the audit state of {log.origin} ({path}) is at size {resume.tree_size}, ahead of "
                                f"the size {log.size} cosigned: restore the witness's files together")
    if url.startswith(("http://", "https://")):
        inner: Source = _url_source(log.origin, url)
    elif os.path.isdir(url):
        inner = DirSource(url)
    else:
        _close_state(resume)
        raise AuditUnavailable(f"{url}: the log's tiles are not there")
    source = _RequestSource(inner, checkpoint)
    first = note.parse_vkey(log.keys[0][1])
    try:
        report = _replay(source, first, resume)
    except BaseException:
        _close_state(resume)
        raise
    finally:
        source.close()
    return Audit(log.origin, path, report.entries_checked, source.files, source.bytes, report)


def _replay(source: "_RequestSource", first: note.Verifier, resume) -> object:
    """:func:`ledger.verify.run.verify` of the new entries, its failures
    sorted into :class:`AuditUnavailable` (the entries could not be read)
    and :class:`AuditFailed` (they break something)."""
    from ledger.verify.run import verify

    try:
        return verify(source, [first], workers=1, check_tiles=False, resume=resume, keep_state=True)
    except _FetchFailed as e:
        raise AuditUnavailable(f"audit: {e.reason}", seq=e.seq) from None
    except VerificationError as e:
        raise AuditFailed(f"refused by the audit ({AUDIT_STATEMENT}): {e.reason}", seq=e.seq) from None
    except InputError as e:
        raise WitnessStateError(f"the audit state of the log: {e}") from None

"""Reading the files of a published log within bounds of time and memory.

A source's files come from a user or an attacker: nothing they send may
hang the verifier or make it allocate without limit.

* Local files (:func:`read_file`): regular files only. The open never
  blocks (``O_NONBLOCK``: a FIFO in place of a file has no writer to wait
  for), then the type is checked on the open descriptor; at most
  ``limit + 1`` bytes are read.
* HTTP (:class:`HttpFetcher`): httpx, one client per source (connections
  are reused). Each request has a whole-request deadline (connect, headers
  and body together, redirects included) and a stall deadline (no byte
  received for so long); both are enforced on every socket operation by a
  network backend that cuts each one at the request's deadline, so a
  server dripping one byte a second is cut at the deadline, not after one
  per-read timeout per byte. The body is read raw (``Accept-Encoding:
  identity``; a compressed answer is refused) and counted while it
  streams: at most ``limit`` bytes plus one read (64 KiB) are held.
  Header size is bounded by h11 (100 KiB for the status line and headers).
"""

from __future__ import annotations

import math
import os
import stat
import time
from dataclasses import dataclass

from ledger.errors import FundledgerError, InputError, InvariantError, VerificationError

REQUEST_TIMEOUT_S = 120.0  # one file's request, all of it: a 16 MiB entry bundle at 140 KB/s
STALL_TIMEOUT_S = 30.0  # no byte received (or sent, or connected) for this long
MAX_TIMEOUT_S = 86_400
MAX_REDIRECTS = 5
ENV_REQUEST_TIMEOUT = "FUNDLEDGER_REQUEST_TIMEOUT"
ENV_STALL_TIMEOUT = "FUNDLEDGER_STALL_TIMEOUT"
_MAX_DETAIL = 160  # characters of a library's error message quoted in ours


@dataclass(frozen=True)
class Deadlines:
    """Seconds: a whole request, and the longest wait for the next byte."""

    request_s: float = REQUEST_TIMEOUT_S
    stall_s: float = STALL_TIMEOUT_S

    def __post_init__(self):
        for name, value in (("request", self.request_s), ("stall", self.stall_s)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= MAX_TIMEOUT_S:
                raise InputError(f"the {name} deadline (--{name}-timeout) must be a number of seconds above 0 "
                                 f"and at most {MAX_TIMEOUT_S:g}")


def detail(e: BaseException) -> str:
    """A library's error message made safe for one line of ours: no control
    characters, at most _MAX_DETAIL characters (it may quote what a server sent)."""
    text = "".join(c if c.isprintable() else "?" for c in str(e) or type(e).__name__)
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


# --- local files ---------------------------------------------------------------------


def read_file(path: str, limit: int, name: str, error: type[FundledgerError] = VerificationError,
              cut: bool = False) -> bytes | None:
    """The bytes of the regular file ``path``, or None if there is none.
    ``error`` (named ``name``) if it is a directory, a FIFO, a device or a
    socket, cannot be read, or is larger than ``limit`` bytes (with ``cut``,
    its first ``limit + 1`` bytes instead, for a parser to refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise error(f"{name}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{name} is not a regular file")
        data = _read_up_to(fd, limit + 1)
    except OSError as e:
        raise error(f"{name}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit and not cut:
        raise error(f"{name} is larger than {limit} bytes")
    return data


def _read_up_to(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes of a file (a short read is not the end)."""
    parts, left = [], n
    while left > 0:
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


# --- HTTP ----------------------------------------------------------------------------


class _Clock:
    """The deadline of the request under way (``time.monotonic()`` seconds)."""

    def __init__(self):
        self.deadline = math.inf

    def left(self, timeout: float | None, exc: type[Exception]) -> float:
        """``timeout`` (the stall deadline) cut to what is left of the request's."""
        remaining = self.deadline - time.monotonic()
        if math.isinf(remaining):  # (no request under way)
            return timeout
        if remaining <= 0:
            raise exc("the request deadline has passed")
        return remaining if timeout is None else min(timeout, remaining)


def _backend(clock: _Clock):
    """An httpcore network backend whose every connect, read and write waits
    at most until the request's deadline (see the module docstring)."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, clock.left(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, clock.left(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self._inner.start_tls(ssl_context, server_hostname,
                                                clock.left(timeout, httpcore.ConnectTimeout)))

        def get_extra_info(self, info: str):
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self):
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            t = clock.left(timeout, httpcore.ConnectTimeout)
            return Stream(self._inner.connect_tcp(host, port, t, local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            t = clock.left(timeout, httpcore.ConnectTimeout)
            return Stream(self._inner.connect_unix_socket(path, t, socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return Backend()


class HttpFetcher:
    """GETs under one base URL with :class:`Deadlines` and a byte limit per
    file. Opened on first use, so a worker process makes its own."""

    def __init__(self, deadlines: Deadlines):
        self.deadlines = deadlines
        self._clock = _Clock()
        self._client = None
        self._served = False  # whether this source has answered anything yet

    def _open(self):
        import httpcore
        import httpx

        d = self.deadlines
        transport = httpx.HTTPTransport(retries=0)
        if not hasattr(transport, "_pool"):  # the pool httpx's transport sends through
            raise InvariantError("this httpx has no HTTPTransport._pool")
        transport._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=4, max_keepalive_connections=4,
            keepalive_expiry=d.stall_s, network_backend=_backend(self._clock),
        )
        # trust_env=False: a proxy from the environment would get a transport
        # of httpx's own, without the deadlines
        return httpx.Client(transport=transport, timeout=httpx.Timeout(d.stall_s), follow_redirects=True,
                            max_redirects=MAX_REDIRECTS, trust_env=False,
                            headers={"User-Agent": "fundledger-verify", "Accept-Encoding": "identity"})

    def get(self, url: str, limit: int, name: str) -> bytes | None:
        """The body of ``url`` (None on 404). VerificationError (named ``name``
        for the size limit) for anything else but a server that cannot be
        reached at all before it answered anything (InputError)."""
        import httpx

        shown = url if url.isprintable() else repr(url)  # (it names the file in one line)
        if self._client is None:
            self._client = self._open()
        self._clock.deadline = time.monotonic() + self.deadlines.request_s
        try:
            with self._client.stream("GET", url) as r:
                self._served = True
                if r.status_code == 404:
                    return None
                if not 200 <= r.status_code < 300:
                    raise VerificationError(f"{shown}: HTTP {r.status_code}")
                return _body(r, limit, name)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            raise InputError(f"{shown}: not a URL to fetch ({detail(e)})") from None
        except httpx.HTTPError as e:
            raise self._failure(shown, e) from None
        finally:
            self._clock.deadline = math.inf

    def _failure(self, url: str, e: Exception) -> FundledgerError:
        """One line for a failed request: why, and which option sets the bound."""
        import httpx

        d = self.deadlines
        if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)) and not self._served:
            return InputError(f"{url}: cannot connect ({detail(e)})")
        if isinstance(e, httpx.TimeoutException):
            if time.monotonic() >= self._clock.deadline - 1e-3:
                return VerificationError(f"{url}: no complete answer within the request deadline of "
                                         f"{d.request_s:g} s (--request-timeout)")
            return VerificationError(f"{url}: stalled, nothing received for {d.stall_s:g} s (--stall-timeout)")
        if isinstance(e, httpx.TooManyRedirects):
            return VerificationError(f"{url}: more than {MAX_REDIRECTS} redirects")
        if isinstance(e, httpx.RemoteProtocolError):
            return VerificationError(f"{url}: malformed HTTP answer ({detail(e)})")
        return VerificationError(f"{url}: the transfer failed ({detail(e)})")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _body(r, limit: int, name: str) -> bytes:
    """A response's raw body, refused as soon as it passes ``limit`` bytes."""
    encoding = r.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise VerificationError(f"{name}: the server sent it compressed ({detail(encoding)}), not as is")
    length = r.headers.get("content-length", "")
    if length.isdigit() and len(length) < 20 and int(length) > limit:
        raise VerificationError(f"{name} is larger than {limit} bytes")
    parts, n = [], 0
    for part in r.iter_raw():
        n += len(part)
        if n > limit:
            raise VerificationError(f"{name} is larger than {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def read_small_file(path: str, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refusing (InputError, naming
    ``what`` the file should be) anything else: a FIFO or a device, which
    could block or never end, a directory, or more than ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not block
    except OSError as e:
        raise InputError(f"{path!r}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path!r}: not a regular file, so not {what}")
        raise InputError(f"{path!r}: larger than {limit} bytes, so not {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise InputError(f"{path!r}: {e.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path!r}: larger than {limit} bytes, so not {what}")
    return data


def read_file_head(path: str, n: int, what: str) -> bytes:
    """The first ``n`` bytes of the regular file ``path`` (fewer if it is
    shorter), refusing as :func:`read_small_file` does anything that is not
    a regular file, whatever its size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise InputError(f"{path!r}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path!r}: not a regular file, so not {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read(n)
        except OSError as e:
            raise InputError(f"{path!r}: {e.strerror}") from None

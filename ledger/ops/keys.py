"""Key files: a C2SP/x/mod note private key on one line, mode 0600.

The file holds ``PRIVATE+KEY+<name>+<key id>+<base64>`` and a newline, the
spelling of golang.org/x/mod/sumdb/note, so the key also works with Go's
tooling. A key file readable or writable by group or others is refused.
"""

from __future__ import annotations

import os
import stat

from ledger.format import note
from ledger.errors import FundledgerError, InputError, KeyFileError

MAX_KEY_FILE_BYTES = 4096


def check_key_name(name: str, what: str = "name") -> None:
    """Refuse a name a key file cannot hold. A signed note's key name is
    non-empty, without spaces or '+' (C2SP signed-note); the key file
    (golang.org/x/mod/sumdb/note's one-line format) is read back as ASCII,
    so the name is also printable ASCII only. ``what`` names it in the
    message (a log's origin, a witness's name)."""
    if not isinstance(name, str) or not name or not all("\x21" <= c <= "\x7e" and c != "+" for c in name):
        raise InputError(
            f"{what} {str(name)[:80]!r} is not a valid key name: use 1 or more printable ASCII characters "
            "(letters, digits, punctuation such as . / - _ :), no spaces, no '+'"
        )
    note.check_key_name(name)


def create_key_file(path: str, name: str, alg: int = note.ALG_ED25519) -> note.Signer:
    """Generate a key named ``name`` and write it to ``path`` (0600, never
    overwriting). ``alg`` 0x04 makes an Ed25519 witness (cosignature/v1) key,
    0x06 an ML-DSA-44 one: the file holds its 32-byte seed the same way.

    The key is written and synced under a temporary name, then linked to
    ``path`` (which fails if it exists) and the directory synced: a crash
    leaves either no key file or a whole one that is on disk."""
    check_key_name(name)
    signer = note.generate_signer(name, alg)
    if os.path.lexists(path):
        raise KeyFileError(f"{path} already exists: refusing to overwrite a key")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(signer.skey() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists: refusing to overwrite a key") from None
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    _sync_directory(directory)
    return signer


def _sync_directory(directory: str) -> None:
    """fsync a directory, so that a file just linked into it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_key_file(path: str) -> note.Signer:
    """Read a signing key, refusing a file that group or others can access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
    except FileNotFoundError:
        raise KeyFileError(f"{path!r}: no such key file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise KeyFileError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: key file is accessible by group or others (mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
            )
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large to be a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a key file") from None
    try:
        return note.parse_skey(text)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None
    except FundledgerError as e:  # FormatError from the parser
        raise KeyFileError(f"{path}: not a key file ({e})") from None


def write_public(path: str, vkey: str) -> None:
    """Write a verifier key (public) to ``path``, never overwriting."""
    try:
        with open(path, "x") as f:
            f.write(vkey + "\n")
    except FileExistsError:
        raise KeyFileError(f"{path} already exists") from None
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None

"""What every command module shares: the error handling of one command, the
--db and --key options, and small helpers. Imports neither the writer nor
the verifier: a command loads those itself, when it runs."""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from ledger.errors import FundledgerError

DB_HELP = "Ledger database [env FUNDLEDGER_DB; default fund.db]."
KEY_HELP = "Signing key file [env FUNDLEDGER_KEY; default fund.key]."


def fail(e: FundledgerError) -> None:
    click.echo(f"fundledger: {e}", err=True)
    sys.exit(e.exit_code)


def handled(f):
    """Turn expected failures into one line and an exit code."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except FundledgerError as e:
            fail(e)
        except BrokenPipeError:
            sys.exit(1)

    return wrapper


def db_option(f):
    return click.option("--db", "db_path", envvar="FUNDLEDGER_DB", default="fund.db", show_envvar=False,
                        type=click.Path(dir_okay=False), help=DB_HELP)(f)


def key_option(f):
    return click.option("--key", "key_path", envvar="FUNDLEDGER_KEY", default="fund.key",
                        type=click.Path(dir_okay=False), help=KEY_HELP)(f)


def vkey_path(key_path: str) -> str:
    """Where the public key of ``key_path`` is written: fund.key -> fund.vkey."""
    root, ext = os.path.splitext(key_path)
    return (root if ext == ".key" else key_path) + ".vkey"


def open_store(db_path: str, readonly: bool = False):
    """The ledger at ``db_path``: the writer's store, or with ``readonly``
    the schema's read-only Reader (either imports sqlite3 now)."""
    if readonly:
        from ledger.store.schema import Reader

        return Reader.open(db_path)
    from ledger.store.store import Store

    return Store.open(db_path)


def load_key(key_path: str):
    from ledger.ops.keys import load_key_file

    return load_key_file(key_path)


def load_vkeys(values) -> list:
    """Each --vkey or --witness value (a key, or a file holding one) parsed."""
    from ledger.verify.checkpoint import load_vkey

    return [load_vkey(v) for v in values]


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))

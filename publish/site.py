"""The public transparency site: Datasette over the ledger, read-only and live.

``make_datasette(db_path)`` builds the Datasette instance; ``serve(db_path,
host, port)`` runs it with uvicorn (blocking), as ``datasette serve`` does.
``fundledger serve`` calls :func:`serve`.

What it serves (docs/SITE.md says it for visitors and operators):

* the pages of :mod:`publish.plugin` (home, one per contract, one per entry,
  the in-browser verifier, an Atom feed) and their ``.json`` twins;
* the log as C2SP tlog-tiles, live from the database: ``/checkpoint``,
  ``/vkey``, ``/tile/<L>/<N>[.p/<W>]``, ``/tile/entries/<N>[.p/<W>]``;
* Datasette's own table views and canned queries under ``/ledger``.

Read-only, three times over: the database is opened ``mode=ro`` with
``PRAGMA query_only``; :class:`ReadOnlyDatabase` refuses to open a write
connection at all; and no route, canned query or setting writes (arbitrary
SQL is off). Live: the file is a *mutable* Datasette database, so every
request reads what the writer has committed so far, with no restart.

The signing key never enters the database, so it cannot leak from here.
"""

from __future__ import annotations

import os
import pathlib
import urllib.request
from dataclasses import dataclass

from datasette.app import Datasette
from datasette.database import Database
from datasette.plugins import pm
from datasette.utils import sqlite3

from ledger.format import note
from ledger.errors import FundledgerError, InputError, StoreError

from .verified import POLL_S, SiteVerifier

DB_NAME = "ledger"  # Datasette's name (and URL) for the ledger database
HERE = pathlib.Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# Chosen for a public site that anyone may hammer (docs/SITE.md, "Settings").
SETTINGS = {
    "default_allow_sql": False,  # no arbitrary SQL: canned queries and table views only
    "allow_download": False,  # no download of the database file (the tiles are the bulk path)
    "allow_csv_stream": False,  # no streaming of whole tables as CSV: same reason
    "sql_time_limit_ms": 1000,
    "max_returned_rows": 1000,
    "default_page_size": 50,
    "allow_facet": True,
    "suggest_facets": False,  # costly on a large log, and noise for a visitor
    "facet_time_limit_ms": 200,
    "default_cache_ttl": 5,  # seconds: the data is live
    "num_sql_threads": 3,
}

HIDDEN_TABLES = ("tree", "meta")
UNVERIFIED_COPY = (
    "The derived columns are UNVERIFIED CONVENIENCE COPIES of the signed entries: anyone holding the database "
    "file can edit them without the key. Only `data` is signed; the balances this site verified itself are on "
    "its own pages (/, /funds.json, /contract/<SYMBOL>)."
)  # stored Merkle hashes and key/origin rows: served as tiles and /vkey


@dataclass(frozen=True)
class SiteConfig:
    """What the plugin needs to know about the ledger it publishes. Read once
    at start: the origin and the first log key (the trust anchor published
    as ``/vkey``) never change."""

    db_name: str
    origin: str
    vkey: str
    db_path: str
    witnesses: tuple = ()  # note.Verifier of each witness whose cosignatures the site checks
    auditors: tuple = ()  # those of them that audit (replay the fund rules before they cosign)
    verifier: SiteVerifier | None = None  # the site's own verification (publish/verified.py)


class ReadOnlyDatabase(Database):
    """A Datasette database that can only ever read: connections are opened
    ``mode=ro`` with ``PRAGMA query_only=1``, and asking for a write
    connection (Datasette's execute_write*) raises."""

    def __init__(self, ds: Datasette, path: str):
        super().__init__(ds, path=path, is_mutable=True)

    def connect(self, write: bool = False):
        if write:
            raise PermissionError("the fundledger site never writes the ledger")
        uri = "file:" + urllib.request.pathname2url(os.path.abspath(self.path)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA busy_timeout = 5000")
        self._all_file_connections.append(conn)
        return conn

    async def execute_write_fn(self, fn, block=True):
        raise PermissionError("the fundledger site never writes the ledger")


def _read_meta(db_path: str) -> tuple[str, str]:
    """``(origin, vkey)`` of the ledger at ``db_path``; StoreError if it is
    not one."""
    if not os.path.isfile(db_path):
        raise StoreError(f"{db_path}: no such ledger (run `fundledger init ORIGIN` first)")
    uri = "file:" + urllib.request.pathname2url(os.path.abspath(db_path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{db_path}: not a fundledger database ({e})") from None
    if "origin" not in meta or "vkey" not in meta:
        raise StoreError(f"{db_path}: not a fundledger database (no origin or key)")
    return meta["origin"], meta["vkey"]


def metadata(origin: str, db_name: str = DB_NAME) -> dict:
    """Datasette metadata: titles, descriptions, hidden tables, canned queries."""
    return {
        "title": f"Insurance funds: {origin}",
        "description": (
            "Every credit and debit of every insurance fund, as a signed, hash-chained, "
            "append-only log. Read-only. Anyone can check every number: see /verify."
        ),
        "about": "How to read and check this site",
        "about_url": "/about",
        "allow_sql": False,
        "databases": {
            db_name: {
                "description": (
                    "The ledger, read-only and live. Arbitrary SQL is off; the tables below and "
                    "the canned queries are the API (add .json to any URL)."
                ),
                "allow_sql": False,
                "tables": _tables_metadata(),
                "queries": _canned_queries(),
            }
        },
    }


def _tables_metadata() -> dict:
    """Each table's description and display settings; the internal ones hidden."""
    return {
        **{t: {"hidden": True} for t in HIDDEN_TABLES},
        "entries": _entries_metadata(),
        "contracts": {
            "description": (
                "One row per fund: its terms and current balance, a summary of the entries kept by the "
                "writer. UNVERIFIED CONVENIENCE COPY: anyone holding the database file can edit it "
                "without the key. The balances this site verified itself are on its home page, "
                "/funds.json and /contract/<SYMBOL>."
            ),
            "sort": "symbol",
        },
        "checkpoints": {
            "description": "Every signed checkpoint (tree size and Merkle root), oldest first.",
            "sort_desc": "id",
        },
        "cosignatures": {
            "description": (
                "Cosignature lines stored for the checkpoints, as the operator collected them. "
                "Unverified: a row here is a claim; the home page calls a cosignature verified only "
                "when it checks against a witness key the site was given."
            ),
        },
    }


def _entries_metadata() -> dict:
    """The entries table: what each column is, and which ones are unverified copies."""
    return {
        "description": (
            "One row per log entry. `data` is the entry exactly as signed (a C2SP signed "
            "note); every other column is derived from it for querying. " + UNVERIFIED_COPY
        ),
        "sort_desc": "seq",
        "size": 50,
        "facets": ["kind", "contract"],
        "columns": {
            "seq": "Position in the log (0, 1, 2, ...)",
            "data": "The entry's exact signed bytes",
            "leaf_hash": "RFC 6962 leaf hash: SHA-256(0x00 || data)",
            "time": "When it happened (UTC)",
            "kind": "contract (a fund opened), liquidation (the fund moved) or key (signing key changed)",
            "contract": "The contract whose fund this is",
            "liquidation_id": "The exchange's liquidation id",
            "delta": "What the liquidation left: positive = surplus into the fund, negative = "
                     "shortfall (unverified copy of the signed entry's field)",
            "paid": "What the fund paid to cover a shortfall (unverified copy)",
            "adl": "The part of a shortfall the fund could not cover, passed to auto-deleveraging "
                   "(unverified copy)",
            "balance": "The fund's balance after this entry (unverified copy: the site's verified "
                       "balances are on its own pages)",
        },
    }


def _canned_queries() -> dict:
    """The site's read API beyond the table views: fixed SQL, bounded results."""
    return {
        "fund_balances": {
            "title": "Every fund's balance (unverified convenience copy)",
            "description": "Read from the contracts summary table. " + UNVERIFIED_COPY,
            "sql": (
                "SELECT symbol AS contract, currency, type, balance, balance_usd, credited, paid, adl, "
                "liquidations, last_seq, last_time FROM contracts ORDER BY symbol"
            ),
        },
        "fund_history": {
            "title": "One fund's history, newest first",
            "description": (
                "contract: the symbol; before: only entries with a smaller seq (blank for the newest). "
                + UNVERIFIED_COPY
            ),
            "sql": (
                "SELECT seq, time, kind, liquidation_id, side, qty, bankruptcy_price, fill_price, "
                "mark_price, delta, paid, adl, balance FROM entries WHERE contract = :contract "
                "AND seq < COALESCE(CAST(NULLIF(:before, '') AS INTEGER), 9223372036854775807) "
                "ORDER BY seq DESC LIMIT 100"
            ),
        },
        "latest_movements": {
            "title": "The latest fund movements, all funds",
            "description": UNVERIFIED_COPY,
            "sql": (
                "SELECT seq, time, contract, liquidation_id, side, qty, bankruptcy_price, fill_price, "
                "mark_price, delta, paid, adl, balance FROM entries WHERE kind = 'liquidation' "
                "ORDER BY seq DESC LIMIT 100"
            ),
        },
        "entry_text": {
            "title": "One entry as signed",
            "sql": "SELECT seq, CAST(data AS TEXT) AS signed_entry FROM entries WHERE seq = :seq",
        },
        "checkpoint_history": {
            "title": "Every signed checkpoint",
            "sql": (
                "SELECT id, tree_size, hex(root) AS root_hex, time, CAST(note AS TEXT) AS signed_note "
                "FROM checkpoints ORDER BY id DESC LIMIT 1000"
            ),
        },
    }


class FundledgerDatasette(Datasette):
    """Datasette carrying the site's config, set before Datasette's own
    constructor runs (it builds the ASGI app, and so asks the plugin for
    its routes, right away)."""

    def __init__(self, config: SiteConfig, **kwargs):
        self._fundledger = config
        super().__init__(**kwargs)


def _register_plugin() -> None:
    from . import plugin

    if not pm.is_registered(plugin):
        pm.register(plugin, name="fundledger-site")


def witness_keys(witnesses) -> tuple:
    """The witnesses' verifier keys, Ed25519 cosignature/v1 (0x04) or
    ML-DSA-44 (0x06), each given inline (or a ``note.Verifier``);
    InputError for anything else."""
    out = []
    for w in witnesses:
        try:
            v = w if isinstance(w, note.Verifier) else note.parse_vkey(str(w).strip())
        except FundledgerError as e:
            raise InputError(f"bad witness key: {e}") from None
        if v.alg not in (note.ALG_COSIGNATURE_V1, note.ALG_MLDSA44):
            raise InputError(f"witness key {v.name} is not a cosignature/v1 or ML-DSA-44 key")
        out.append(v)
    return tuple(out)


def make_datasette(db_path: str, witnesses=(), poll_s: float = POLL_S, auditors=()) -> Datasette:
    """The Datasette instance serving the ledger at ``db_path``, read-only
    and live. ``witnesses``: the keys of the witnesses whose cosignatures it
    checks. Its own verification of the ledger starts at once, in the
    background (``ds._fundledger.verifier``); every ``poll_s`` seconds it
    looks for a new checkpoint."""
    path = os.path.abspath(db_path)
    origin, vkey = _read_meta(path)
    _register_plugin()
    verifier = SiteVerifier(path, vkey, poll_s=poll_s)
    ds = FundledgerDatasette(
        SiteConfig(DB_NAME, origin, vkey, path, witness_keys(tuple(witnesses) + tuple(auditors)), verifier=verifier,
                   auditors=witness_keys(auditors)),
        files=[],
        metadata=metadata(origin),
        settings=SETTINGS,
        template_dir=str(TEMPLATES),
        static_mounts=[("static", str(STATIC))],
        cors=True,
    )
    ds.remove_database("_memory")  # added because files=[]: nothing to publish there
    ds.add_database(ReadOnlyDatabase(ds, path), name=DB_NAME)
    verifier.start()
    return ds


def wait_verified(ds: Datasette, timeout: float = 60.0):
    """Wait until the site has verified the checkpoint its database holds
    now (or found it bad); the snapshot. Tests and embedders."""
    return ds._fundledger.verifier.refresh(timeout)


def serve(db_path: str, host: str, port: int, witnesses=(), auditors=()) -> None:
    """Serve the site until interrupted (blocking), with uvicorn as Datasette does."""
    import uvicorn

    ds = make_datasette(db_path, witnesses, auditors=auditors)
    uvicorn.run(ds.app(), host=host, port=port, log_level="info", lifespan="on", workers=1)


class BackgroundServer:
    """The site served by uvicorn in a daemon thread on a free loopback port
    (tests, embedding). ``with BackgroundServer(db) as url: ...``; ``url``
    ends with ``/``. ``start()`` returns once the site has verified the
    database's checkpoint too, waiting up to ``verified_timeout`` seconds
    (None: not at all)."""

    def __init__(self, db_path: str, host: str = "127.0.0.1", port: int = 0, datasette: Datasette | None = None,
                 app=None, verified_timeout: float | None = 60.0):
        import uvicorn

        self.verified_timeout = verified_timeout
        self.datasette = datasette or make_datasette(db_path)
        asgi = app if app is not None else self.datasette.app()
        self.server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=port, log_level="warning", lifespan="on"))
        self.thread = None
        self.url = None

    def start(self) -> str:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, name="fundledger-site", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the site did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}/"
        if self.verified_timeout is not None:
            wait_verified(self.datasette, self.verified_timeout)
        return self.url

    def stop(self) -> None:
        self.datasette._fundledger.verifier.stop()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.datasette.executor is not None:
            self.datasette.executor.shutdown(wait=False)
        for db in self.datasette.databases.values():
            db.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

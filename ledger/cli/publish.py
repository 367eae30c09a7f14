"""The publishing commands: the static tile export, the live site, and the
demo that builds and publishes a whole ledger. Each imports what it runs
(publish/, Datasette, the demo) only when it runs."""

from __future__ import annotations

import sys

import click

from .common import db_option, handled, load_vkeys, open_store


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--full", is_flag=True, help="Rewrite every file, not only what changed.")
@db_option
@handled
def export(directory, full, db_path):
    """Publish the log as static C2SP tlog-tiles in DIRECTORY (incremental).

    Example: fundledger export public/
    """
    from publish.export import export as do_export

    r = do_export(open_store(db_path, readonly=True), directory, full=full)
    click.echo(f"exported tree size {r.tree_size} (was {r.previous_size}): {r.files_written} files written")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--witness", "witnesses", multiple=True,
              help="A witness's cosignature key (or file) the site checks cosignatures against. Repeatable; "
                   "without it every cosignature is shown as an unverified claim.")
@click.option("--auditor", "auditors", multiple=True,
              help="An auditing witness's key (or file): checked as --witness is, and named on the pages as a "
                   "witness that replays every fund rule before it cosigns. Repeatable.")
@db_option
@handled
def serve(host, port, witnesses, auditors, db_path):
    """Serve the read-only transparency site (Datasette) and the log's C2SP
    tiles, live from the ledger database. The site verifies the log itself,
    in the background, and shows only the balances it verified.

    Example: fundledger serve --db demo/fund.db --port 8001
    """
    from publish.site import serve as run_site, witness_keys

    keys, audit_keys = witness_keys(load_vkeys(witnesses)), witness_keys(load_vkeys(auditors))
    open_store(db_path, readonly=True).close()  # a clear error for a missing ledger
    run_site(db_path, host, port, keys, audit_keys)


@click.command()
@click.option("--dir", "directory", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to build the demo (must not hold a ledger already).")
@click.option("--seed", default=2026, show_default=True, help="Random seed: the same seed gives the same market.")
@click.option("--liquidations", default=3000, show_default=True, type=click.IntRange(10, 10_000_000),
              help="How many liquidations to simulate.")
@click.option("--live", is_flag=True,
              help="On the demo already built in --dir: run it live (a witness, the log service fed by a simulated "
                   "risk engine, the site on --port, a monitor printing its events) until Ctrl-C.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535), help="With --live: the site's port.")
@handled
def demo(directory, seed, liquidations, live, port):
    """Tell the whole story on a simulated market: a ledger on the demo
    market's contracts, liquidations with surpluses and shortfalls, a
    volatile spell that drains a fund into ADL, checkpoints, verification
    and a static export.

    Example: fundledger demo --dir demo --seed 7
    """
    if live:
        from ledger.ops.live import run_live

        run_live(directory, port, echo=lambda line: click.echo(line) or sys.stdout.flush())
        return
    from ledger.ops.demo import run_demo

    run_demo(directory, seed=seed, liquidations=liquidations, echo=click.echo)

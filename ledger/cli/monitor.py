"""``fundledger monitor``: follow a log and raise the alarm (ledger/ops/monitor.py)."""

from __future__ import annotations

import signal
import sys
import time

import click

from ledger.errors import FundledgerError

from .common import handled


@click.command("monitor")
@click.argument("source")
@click.option("--state", "state_path", required=True, type=click.Path(dir_okay=False),
              help="The monitor's own state (SQLite; the verifier's beside it as FILE.verify).")
@click.option("--vkey", default=None, help="The log's first key (or a file): else the source's /vkey, pinned on the first pass.")
@click.option("--hook", default=None, help="A command run once per event: the event's JSON on its stdin, its kind in FUNDLEDGER_EVENT.")
@click.option("--witness-url", "witness_urls", multiple=True,
              help="A witness's URL: compare what its monitoring endpoint cosigned (a split view). Repeatable.")
@click.option("--max-age", "max_age_s", type=click.IntRange(1), default=None,
              help="Seconds without a new checkpoint before a `stale` alarm.")
@click.option("--payout-threshold", default=None, help="A payout above this amount (the fund's currency) is an event.")
@click.option("--follow", is_flag=True, help="Keep polling (every --interval seconds) instead of one pass.")
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=60.0, show_default=True,
              help="Seconds between passes with --follow.")
@handled
def monitor(source, state_path, vkey, hook, witness_urls, max_age_s, payout_threshold, follow, interval):
    """Follow the log at SOURCE (a URL or an export directory), verify what
    is new, and print events as JSON lines (and run --hook for each).

    One pass by default, for cron: exit 0 if nothing is wrong, 1 on an
    alarm (verification failed, rollback, fork, split view, stale, a hook
    that failed), 2 on bad input. Notices (new contract, key rotation, ADL,
    a payout above --payout-threshold) exit 0. Each event is delivered at
    least once, across restarts.

    Example: fundledger monitor public/ --state monitor.db --max-age 3600
    """
    from ledger.ops import monitor as m

    opts = m.Options(source, state_path, vkey, tuple(witness_urls), max_age_s,
                     m.parse_threshold(payout_threshold), hook)
    if not follow:
        events = m.one_pass(opts, emit=click.echo)
        sys.exit(1 if any(e["event"] in m.ALARMS for e in events) else 0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        try:
            m.one_pass(opts, emit=lambda line: click.echo(line) or sys.stdout.flush())
        except FundledgerError as e:  # the source unreachable, say: said, and tried again
            click.echo(f"fundledger monitor: {e}", err=True)
        deadline = time.monotonic() + interval
        while not stop and time.monotonic() < deadline:
            time.sleep(min(0.2, interval))

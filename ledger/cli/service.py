"""``fundledger run``: the log as a long-running service (ledger/ops/service.py)."""

from __future__ import annotations

import click

from ledger.ops import api

from .common import db_option, handled, key_option, load_key, open_store


@click.command("run")
@click.option("--listen", default="127.0.0.1:8002", show_default=True,
              help="HOST:PORT for POST /add and GET /health (port 0: any free port). Not the public site.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="A file holding the bearer token POST /add requires (without it, /add refuses every request).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Export the tiles here, incrementally, before each checkpoint is published.")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=1.0, show_default=True,
              help="Seconds between checkpoints at most (one is signed only when the log grew).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), default=None,
              help="A c2sp.org/tlog-policy file: publish each checkpoint only once its witnesses' quorum cosigned it.")
@click.option("--witness-interval", type=click.FloatRange(1, 86400), default=None,
              help="With --policy: seconds between cosignature requests on an idle log [default: max(interval, 60)].")
@db_option
@key_option
@handled
def run_cmd(listen, token_file, export_dir, interval, policy_path, witness_interval, db_path, key_path):
    """Run the log as a service: take records (the import's JSON Lines) at
    POST /add or on standard input, append them under the rules, and sign a
    checkpoint whenever the log grew, at most every --interval seconds.

    A POST body is all-or-nothing: a bad line is a 400 naming it and nothing
    of the body is written. The reply gives each record's seq, or
    "duplicate" for a replay, once it is durable. Lines on standard input
    are acknowledged one JSON line each on standard output. SIGTERM finishes
    the queue, signs a last checkpoint and exits 0.

    Example: fundledger run --listen 127.0.0.1:8002 --token-file token.txt --export site/
    """
    from ledger.ops import service
    from ledger.verify.checkpoint import load_policy

    policy = None if policy_path is None else load_policy(policy_path)
    open_store(db_path).close()  # bad input (no ledger) said before listening
    service.serve(lambda: open_store(db_path), load_key(key_path), api.writer_anchor(key_path), listen, token_file,
                  export_dir, interval, policy, witness_interval, api.load_pq_key(key_path))

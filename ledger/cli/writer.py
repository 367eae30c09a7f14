"""The operator's commands on the ledger database: create it, append
contracts, liquidations and imports, sign checkpoints, rotate the key, keep
witness cosignatures, and read the funds back (balance, history).

Each one is a call to :mod:`ledger.ops.api`, imported here at the top: the
group loads this module only for one of these commands (ledger/cli/__init__.py)."""

from __future__ import annotations

import sys

import click

from ledger.format import records
from ledger.errors import VerificationError
from ledger.ops import api

from .common import db_option, echo_json, handled, key_option, load_key, load_vkeys, open_store, vkey_path


@click.command()
@click.argument("origin")
@click.option("--format", "log_format", type=click.IntRange(1, 2), default=2, show_default=True,
              help="The log format (docs/FORMAT.md): 2 adds fund chains and state entries, so that one fund "
                   "can be checked alone; 1 is the format of logs made before.")
@db_option
@key_option
@handled
def init(origin, log_format, db_path, key_path):
    """Create a ledger and its Ed25519 signing key.

    ORIGIN names the log (and its key), e.g. a domain and path you control.
    Writes the database, a key file readable only by you (0600) and the
    public verifier key beside it (fund.vkey for fund.key); refuses to
    overwrite any of them.

    Example: fundledger init example.com/insurance-fund
    """
    store, signer = api.init_ledger(db_path, key_path, origin, vkey_path(key_path), log_format)
    click.echo(f"created {db_path}, {key_path} (secret) and {vkey_path(key_path)} (public)")
    click.echo(f"verifier key: {signer.verifier().vkey()}")


@click.group()
def contract():
    """Register contracts (each registration is a signed entry)."""


@contract.command("add")
@click.argument("symbol")
@click.option("--currency", required=True, help="Settlement currency, e.g. USDT or XBT.")
@click.option("--scale", required=True, type=click.IntRange(0, 18), help="Digits after the point of fund amounts.")
@click.option("--type", "ctype", type=click.Choice(["linear", "inverse"]), default="linear", show_default=True)
@click.option("--multiplier", default="1", show_default=True, help="Contract size (coin per contract, or USD per contract for inverse).")
@click.option("--lot", default=None, help="Lot size in contracts: a lot contract, whose ADL is allocated (docs/ADL.md; format 2).")
@db_option
@key_option
@handled
def contract_add(symbol, currency, scale, ctype, multiplier, lot, db_path, key_path):
    """Register contract SYMBOL and open its insurance fund at zero.

    Example: fundledger contract add XBTUSDTM --currency USDT --scale 8 --multiplier 0.001
    """
    store = open_store(db_path)
    record = records.contract_record(symbol, currency, scale, ctype, multiplier, lot)
    r = api.append_one(store, load_key(key_path), record, anchor=api.writer_anchor(key_path))
    report_append(r)


def report_append(r) -> None:
    for d in r.duplicates:
        click.echo(d)
    for seq in r.appended:
        click.echo(f"appended seq {seq}")


@click.command()
@click.argument("symbol")
@click.option("--id", "liquidation_id", required=True, help="The exchange's liquidation id (recorded at most once).")
@click.option("--side", type=click.Choice(["long", "short"]), required=True, help="Side of the liquidated position.")
@click.option("--qty", required=True, help="Contracts liquidated.")
@click.option("--bankruptcy-price", required=True, help="Price at which the position's margin is exactly zero.")
@click.option("--fill-price", required=True, help="Price at which the liquidation closed.")
@click.option("--mark-price", default=None, help="Mark price at the time (used for USD values).")
@click.option("--time", "time_", default=None, help="RFC 3339 time of the liquidation [default: now].")
@db_option
@key_option
@handled
def liquidation(symbol, liquidation_id, side, qty, bankruptcy_price, fill_price, mark_price, time_, db_path, key_path):
    """Record one liquidation of SYMBOL and its effect on the fund.

    A close better than the bankruptcy price credits the surplus; a worse one
    is paid by the fund up to its balance, the rest going to
    auto-deleveraging (ADL). A replayed id writes nothing and says
    "duplicate".

    Example: fundledger liquidation XBTUSDTM --id L-1 --side long --qty 3 --bankruptcy-price 39000 --fill-price 39100
    """
    record = records.liquidation_record(symbol, liquidation_id, side, qty, bankruptcy_price, fill_price,
                                        mark_price, time_)
    store = open_store(db_path)
    r = api.append_one(store, load_key(key_path), record, anchor=api.writer_anchor(key_path))
    report_append(r)
    if r.appended:
        e = store.entry_row(r.appended[-1])
        click.echo(f"{symbol}: delta {e['delta']}, paid {e['paid']}, adl {e['adl']}, balance {e['balance']}")


@click.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--batch", "batch_size", type=click.IntRange(1, 10_000), default=api.IMPORT_BATCH,
              show_default=True, help="Records per transaction.")
@click.option("--max-input-bytes", type=click.IntRange(1), default=api.MAX_SPOOL_BYTES, show_default=True,
              help="Refuse a standard input (or pipe) longer than this; it is copied to a temporary file first.")
@db_option
@key_option
@handled
def import_(file, batch_size, max_input_bytes, db_path, key_path):
    """Append contract and liquidation records from JSON Lines (FILE or -).

    The whole input is checked first: a bad line means exit 2 naming the
    line, and nothing is written. Replays are skipped, so an interrupted
    import can simply be run again. Standard input is copied to a temporary
    file as it is read: a line over 65536 bytes, or more than
    --max-input-bytes in all, is refused at once (exit 2, nothing written).

    Example: fundledger import liquidations.jsonl
    """
    store = open_store(db_path)
    signer = load_key(key_path)
    stream = file if file.seekable() else api.spool(file, max_input_bytes)
    bar = None

    def start(total):
        nonlocal bar
        bar = click.progressbar(length=total, label="importing", file=sys.stderr)
        bar.__enter__()

    try:
        r = api.import_records(store, signer, stream, progress=lambda n: bar.update(n),
                               batch_size=batch_size, on_checked=start, anchor=api.writer_anchor(key_path))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"{r.appended} appended, {r.duplicates} duplicates skipped, {r.lines} records, tree size {r.tree_size}")


@click.command()
@click.argument("symbol", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
@db_option
@handled
def balance(symbol, as_json, db_path):
    """Show each fund's balance (or SYMBOL's) in its currency and in USD.

    Example: fundledger balance --json
    """
    b = api.balances(open_store(db_path, readonly=True), symbol)
    if as_json:
        echo_json(b)
        return
    for c in b["contracts"]:
        usd = "n/a" if c["balance_usd"] is None else f"{c['balance_usd']} USD"
        click.echo(f"{c['contract']:<14} {c['balance']:>28} {c['currency']:<6} {usd:>20}  ({c['liquidations']} liquidations, ADL {c['adl']})")


@click.command()
@click.argument("symbol")
@click.option("--account-commitment", "account", metavar="C",
              help="Only the events that closed this trader's position (base64 of the account commitment).")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
@db_option
@handled
def adl(symbol, account, as_json, db_path):
    """Show SYMBOL's ADL events: each one's size against the minimum its
    fund's balance required, the ranking cut-off and the positions closed.

    With --account-commitment (what the exchange gave the trader), only the
    events that closed one of the trader's positions, with its rank and a
    receipt. None listed is not a proof that the trader was never in a
    queue: a spared position is not in the log; its place is checked with
    the exchange's queue proof against the event's queue_root.

    Example: fundledger adl XBTUSDTM --json
    """
    from ledger.errors import InputError
    from publish import adl as adl_report

    store = open_store(db_path, readonly=True)
    commitment = None if account is None else adl_report.parse_account(account)

    def receipt(seq: int) -> str | None:
        try:
            return api.prove(store, seq).decode("utf-8")
        except InputError:  # (not covered by a checkpoint yet)
            return None

    report = adl_report.adl_events(store, symbol, commitment, receipt)
    if as_json:
        echo_json(report)
        return
    if not report["events"]:
        who = "closed a position of this account" if account else "happened"
        click.echo(f"no ADL event of {report['contract']} {who}")
        return
    for e in report["events"]:
        click.echo(adl_report.summary_line(e, report["currency"]))
        if account is not None:
            p = e["positions"][0]
            click.echo(f"  your position: rank {p['rank']} (score {p['score']}), {p['qty']} of {p['size']} closed "
                       f"at {p['price']}, in entry {p['seq']}; {p['rank']} ranked above")


@click.command()
@click.argument("symbol")
@click.option("--since", type=click.IntRange(0), default=0, metavar="SEQ", help="Start at entry SEQ [default: 0].")
@click.option("--limit", type=click.IntRange(1), default=None, metavar="N", help="At most N entries [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
@db_option
@handled
def history(symbol, since, limit, as_json, db_path):
    """List the entries of SYMBOL's fund, oldest first, with the liquidation
    behind each movement. Streamed, in constant memory at any size; page
    with --since and --limit (the JSON's "next" is the --since of the next
    page, null after the last).

    Example: fundledger history XBTUSDTM
    """
    import json

    store = open_store(db_path, readonly=True)
    with store.snapshot():
        rows = api.iter_history(store, symbol, since, None if limit is None else limit + 1)
        if as_json:
            click.echo(f'{{\n  "contract": {json.dumps(symbol)},\n  "entries": [', nl=False)
        last, shown = None, 0
        for e in rows:
            if limit is not None and shown == limit:
                last = e["seq"]  # one more than asked for: where the next page starts
                break
            if as_json:
                click.echo(("," if shown else "") + "\n    " + json.dumps(e), nl=False)
            else:
                click.echo(_history_line(e))
            shown += 1
        if as_json:
            click.echo(f'\n  ],\n  "next": {json.dumps(last)}\n}}')


def _history_line(e: dict) -> str:
    if e["kind"] == "contract":
        return f"{e['seq']:>8} {e['time']}  contract registered"
    if e["kind"] == "adl":
        return (f"{e['seq']:>8} {e['time']}  ADL allocation: {e['side']} positions closed "
                "(fundledger adl lists them)")
    return (f"{e['seq']:>8} {e['time']}  {e['liquidation_id']} {e['side']} {e['qty']} @ {e['fill_price']}"
            f" (bankruptcy {e['bankruptcy_price']}): delta {e['delta']} paid {e['paid']} adl {e['adl']}"
            f" balance {e['balance']}")


@click.command("checkpoint")
@db_option
@key_option
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="A c2sp.org/tlog-policy file: ask its witnesses, publish only once the quorum is met.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="With --policy: write the new tiles here before asking, the checkpoint once published.")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True,
              help="With --policy: seconds for each witness's answer.")
@handled
def checkpoint_cmd(db_path, key_path, policy_path, export_dir, timeout):
    """Sign a checkpoint (C2SP tlog-checkpoint) at the current tree size.

    Never signs a checkpoint inconsistent with the previous one. With
    --policy, the checkpoint is first kept as the pending one (its tiles are
    served, the checkpoint is not), each witness of the policy is asked for
    its cosignature (C2SP tlog-witness; from the size it holds on a 409), and
    the checkpoint is published with the cosignatures only if they meet the
    policy's quorum; otherwise exit 1, naming each witness that failed and
    why. With nothing new, the published checkpoint is cosigned again.

    Example: fundledger checkpoint
    """
    store, signer, anchor = open_store(db_path), load_key(key_path), api.writer_anchor(key_path)
    if policy_path is None:
        if export_dir is not None:
            raise click.UsageError("--export goes with --policy (else run `fundledger export`)")
        size, signed, created = api.checkpoint(store, signer, anchor, api.load_pq_key(key_path))
        if not created:
            click.echo(f"checkpoint at size {size} already exists", err=True)
        click.echo(signed.decode(), nl=False)
        return
    from ledger.ops import cosign
    from ledger.verify.checkpoint import load_policy

    result = cosign.checkpoint_with_policy(store, signer, load_policy(policy_path), anchor, timeout, export_dir,
                                           api.load_pq_key(key_path))
    for o in result.outcomes:
        click.echo(f"{o.name}: {o.reason}" + (f" (proved from size {o.old_size})" if o.ok else ""), err=True)
    if not result.published:
        raise VerificationError(f"checkpoint {result.tree_size} not published: the policy's quorum is not met: "
                                + "; ".join(result.unmet) + " (it stays pending; run again to retry)")
    what = "published" if result.new else "cosigned again"
    click.echo(f"checkpoint at size {result.tree_size} {what} with "
               f"{sum(o.ok for o in result.outcomes)} cosignatures (quorum met)", err=True)
    click.echo(store.published_checkpoint().decode(), nl=False)


@click.command("upgrade")
@db_option
@key_option
@handled
def upgrade(db_path, key_path):
    """Switch the log to format 2: every later entry names the previous
    entry of its fund, and each checkpoint ends with a state entry that
    commits to every fund's head, so one fund can be checked alone
    (docs/FORMAT.md, "Format 2"). Appends the first state entry; the
    entries before it keep their meaning.

    Example: fundledger upgrade && fundledger checkpoint
    """
    seq = api.upgrade(open_store(db_path), load_key(key_path), api.writer_anchor(key_path))
    click.echo(f"format 2 from seq {seq} (the first state entry); run `fundledger checkpoint` to publish it")


@click.command("attach-cosignatures")
@click.argument("file", type=click.File("rb"))
@click.option("--witness", "witnesses", multiple=True, required=True, help="A witness's key (or file). Repeatable.")
@db_option
@handled
def attach_cosignatures(file, witnesses, db_path):
    """Keep witness cosignatures (C2SP tlog-cosignature lines in FILE) on the
    latest checkpoint; they are published with it from then on.

    Example: fundledger attach-cosignatures witness-reply.txt --witness witness.vkey
    """
    names = api.attach_cosignatures(open_store(db_path), file.read(1 << 20), load_vkeys(witnesses))
    click.echo(f"attached cosignatures by {', '.join(names)}")


@click.group()
def key():
    """Manage the log's signing key."""


@key.command("add-mldsa")
@click.option("--vkey-out", type=click.Path(dir_okay=False), default=None,
              help="Where to write its public key [default: <key>.mldsa.vkey].")
@key_option
@handled
def key_add_mldsa(vkey_out, key_path):
    """Give the log a second, post-quantum key: an ML-DSA-44 key beside the
    log key (KEY.mldsa, 0600) whose tlog-cosignature v1.1 signature every
    later checkpoint carries, beside the Ed25519 one (which stays: the public
    witness network takes only Ed25519 log keys).

    It is worth something only to readers who pin its public key out of
    band (`fundledger verify --witness KEY.mldsa.vkey`): learnt from the
    Ed25519-signed log itself, it would add nothing against a broken Ed25519.

    Example: fundledger key add-mldsa
    """
    from ledger.ops import keys
    from ledger.format import note

    signer = load_key(key_path)
    path = api.pq_key_path(key_path)
    pq = keys.create_key_file(path, signer.name, note.ALG_MLDSA44)
    out = vkey_out or path + ".vkey"
    keys.write_public(out, pq.verifier().vkey())
    click.echo(f"{path}: the log's ML-DSA-44 key; its public key is in {out}: publish it out of band")


@key.command("rotate")
@click.option("--new-key", "new_key_path", required=True, type=click.Path(dir_okay=False),
              help="Where to create the new key file (0600).")
@db_option
@key_option
@handled
def key_rotate(new_key_path, db_path, key_path):
    """Hand the log over to a new signing key.

    Appends a key entry announcing the new key, signed by the current key
    and by the new one. From then on only the new key's signature counts:
    an entry signed by the old key after this, or a later checkpoint signed
    by it alone, fails verification. Keep using the first key as the trust
    anchor (it stays in `vkey`); verifiers and receipts follow the hand-over
    in the log. Tell each witness with `fundledger witness add-key`. If the
    command is interrupted, run it again with the same --new-key.

    Example: fundledger key rotate --new-key fund-2027.key
    """
    seq, new = api.rotate_key(open_store(db_path), load_key(key_path), new_key_path, api.writer_anchor(key_path))
    click.echo(f"appended seq {seq}: the log key is now {new.verifier().vkey()}")
    click.echo(f"sign with --key {new_key_path} from now on; retire {key_path}")

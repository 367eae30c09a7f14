"""The ``fundledger`` command line: each command parses options, makes one
library call and prints. Expected failures become one line on stderr and exit
2 (bad input, nothing written) or 1 (verification failed)."""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from ledger.ops import api
from ledger.errors import FundledgerError
from ledger.verify.transport import ENV_REQUEST_TIMEOUT, ENV_STALL_TIMEOUT, MAX_TIMEOUT_S, REQUEST_TIMEOUT_S, STALL_TIMEOUT_S

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
    if readonly:
        from ledger.store.schema import Reader

        return Reader.open(db_path)
    from ledger.store.store import Store

    return Store.open(db_path)


def load_key(key_path: str):
    from ledger.ops.keys import load_key_file

    return load_key_file(key_path)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


# click >= 8.2 raises this for a group given no subcommand (8.1 prints the
# help itself and exits 0)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class OneLineErrors(click.Group):
    """A group whose usage errors are one line on stderr and exit 2, like
    every other bad input (click's default prints a usage block). A group
    called without a subcommand prints its whole help instead, readable."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("fundledger: aborted", err=True)
            sys.exit(1)
        except _NO_ARGS_IS_HELP as e:
            # `fundledger` or a group such as `fundledger key` alone: the
            # whole help as click prints it (stderr, exit 2), not one line
            e.show()
            sys.exit(2)
        except click.ClickException as e:
            where = f" ({e.ctx.command_path} --help for usage)" if getattr(e, "ctx", None) else ""
            message = " ".join(e.format_message().split())  # one line, whatever click wrapped
            click.echo(f"fundledger: {message}{where}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("fundledger: interrupted", err=True)
            sys.exit(130)
        sys.exit(0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fundledger")
def cli():
    """fundledger: a signed, hash-chained, publicly verifiable ledger of
    futures insurance funds.

    Start with `fundledger init`, or see everything at once with
    `fundledger demo`.
    """


@cli.command()
@click.argument("origin")
@db_option
@key_option
@handled
def init(origin, db_path, key_path):
    """Create a ledger and its Ed25519 signing key.

    ORIGIN names the log (and its key), e.g. a domain and path you control.
    Writes the database, a key file readable only by you (0600) and the
    public verifier key beside it (fund.vkey for fund.key); refuses to
    overwrite any of them.

    Example: fundledger init example.com/insurance-fund
    """
    store, signer = api.init_ledger(db_path, key_path, origin, vkey_path(key_path))
    click.echo(f"created {db_path}, {key_path} (secret) and {vkey_path(key_path)} (public)")
    click.echo(f"verifier key: {signer.verifier().vkey()}")


@cli.group()
def contract():
    """Register contracts (each registration is a signed entry)."""


@contract.command("add")
@click.argument("symbol")
@click.option("--currency", required=True, help="Settlement currency, e.g. USDT or XBT.")
@click.option("--scale", required=True, type=click.IntRange(0, 18), help="Digits after the point of fund amounts.")
@click.option("--type", "ctype", type=click.Choice(["linear", "inverse"]), default="linear", show_default=True)
@click.option("--multiplier", default="1", show_default=True, help="Contract size (coin per contract, or USD per contract for inverse).")
@db_option
@key_option
@handled
def contract_add(symbol, currency, scale, ctype, multiplier, db_path, key_path):
    """Register contract SYMBOL and open its insurance fund at zero.

    Example: fundledger contract add XBTUSDTM --currency USDT --scale 8 --multiplier 0.001
    """
    store = open_store(db_path)
    record = {
        "kind": "contract", "symbol": symbol, "currency": currency, "scale": scale,
        "type": ctype, "multiplier": multiplier,
    }
    r = api.append_one(store, load_key(key_path), record, anchor=api.writer_anchor(key_path))
    report_append(r)


def report_append(r) -> None:
    for d in r.duplicates:
        click.echo(d)
    for seq in r.appended:
        click.echo(f"appended seq {seq}")


@cli.command()
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
    record = {
        "kind": "liquidation", "contract": symbol, "id": liquidation_id, "side": side, "qty": qty,
        "bankruptcy_price": bankruptcy_price, "fill_price": fill_price,
    }
    if mark_price is not None:
        record["mark_price"] = mark_price
    if time_ is not None:
        record["time"] = time_
    store = open_store(db_path)
    r = api.append_one(store, load_key(key_path), record, anchor=api.writer_anchor(key_path))
    report_append(r)
    if r.appended:
        e = store.entry_row(r.appended[-1])
        click.echo(f"{symbol}: delta {e['delta']}, paid {e['paid']}, adl {e['adl']}, balance {e['balance']}")


@cli.command("import")
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


@cli.command()
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


@cli.command()
@click.argument("symbol")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
@db_option
@handled
def history(symbol, as_json, db_path):
    """List every entry of SYMBOL's fund, oldest first, with the liquidation
    behind each movement.

    Example: fundledger history XBTUSDTM
    """
    h = api.history(open_store(db_path, readonly=True), symbol)
    if as_json:
        echo_json(h)
        return
    for e in h["entries"]:
        if e["kind"] == "contract":
            click.echo(f"{e['seq']:>8} {e['time']}  contract registered")
        else:
            click.echo(
                f"{e['seq']:>8} {e['time']}  {e['liquidation_id']} {e['side']} {e['qty']} @ {e['fill_price']}"
                f" (bankruptcy {e['bankruptcy_price']}): delta {e['delta']} paid {e['paid']} adl {e['adl']}"
                f" balance {e['balance']}"
            )


@cli.command("checkpoint")
@db_option
@key_option
@handled
def checkpoint_cmd(db_path, key_path):
    """Sign a checkpoint (C2SP tlog-checkpoint) at the current tree size.

    Never signs a checkpoint inconsistent with the previous one.

    Example: fundledger checkpoint
    """
    size, signed, created = api.checkpoint(open_store(db_path), load_key(key_path), api.writer_anchor(key_path))
    if not created:
        click.echo(f"checkpoint at size {size} already exists", err=True)
    click.echo(signed.decode(), nl=False)


@cli.command("verify")
@click.argument("source", required=False)
@click.option("--vkey", help="The log's verifier key (or a file holding it); default: the one the source publishes.")
@click.option("--trusted", "trusted_path", type=click.Path(dir_okay=False),
              help="A checkpoint you saved earlier: fail unless the log extends it.")
@click.option("--witness", "witnesses", multiple=True, help="A witness's key (or file): require its cosignature. Repeatable, each witness once.")
@click.option("--quorum", type=click.IntRange(1), default=None, help="How many of the --witness keys must have cosigned [default: all].")
@click.option("--state", "state_path", type=click.Path(dir_okay=False),
              help="Incremental: resume from the state saved in this file (if any) and save the one at the latest checkpoint.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes checking entries [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
@click.option("--request-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True), default=REQUEST_TIMEOUT_S,
              envvar=ENV_REQUEST_TIMEOUT, show_default=True, metavar="S",
              help="URL sources: seconds one file's whole request may take [env FUNDLEDGER_REQUEST_TIMEOUT].")
@click.option("--stall-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True), default=STALL_TIMEOUT_S,
              envvar=ENV_STALL_TIMEOUT, show_default=True, metavar="S",
              help="URL sources: seconds without a byte before a request fails [env FUNDLEDGER_STALL_TIMEOUT].")
@db_option
def verify_cmd(source, vkey, trusted_path, witnesses, quorum, state_path, workers, as_json, request_timeout,
               stall_timeout, db_path):
    """Recompute every balance from the signed chain and check everything.

    SOURCE is a ledger database (default: --db), an export directory or the
    URL of a published site. Exit 0: verified; 1: verification failed (the
    first bad seq and why); 2: bad input.

    A database whose entries no checkpoint covers yet is verified all the
    same, and says so (--json: "checkpoint_size": null); an export or a URL
    without a checkpoint fails.

    Example: fundledger verify public/ --vkey fund.vkey --trusted yesterday.checkpoint
    """
    from ledger.errors import VerificationError
    from ledger.verify.transport import Deadlines
    from ledger.verify.verifier import failure_json, verify_path

    try:
        deadlines = Deadlines(request_timeout, stall_timeout)
        report = verify_path(source or db_path, vkey, trusted_path, workers, witnesses, quorum, state_path, deadlines)
    except VerificationError as e:
        if as_json:
            echo_json(failure_json(e))
            sys.exit(1)
        fail(e)
    except FundledgerError as e:
        fail(e)
    if state_path and report.state is None:
        click.echo(f"fundledger: no state saved in {state_path!r}: {report.state_note}", err=True)
    if as_json:
        echo_json(report.as_json())
        return
    r = report.as_json()
    click.echo(f"verified {r['entries_checked']} entries of {report.source}: tree size {r['size']}, root {r['root']}")
    if r["checkpoint_size"] is None:
        click.echo("no signed checkpoint covers these entries yet (the operator signs one with `fundledger checkpoint`)")
    else:
        click.echo(f"checkpoint at size {r['checkpoint_size']} signed by the log key ({report.key_source})")
        after = r["size"] - r["checkpoint_size"]
        if after:
            click.echo(f"{after} {'entry' if after == 1 else 'entries'} after it: checked, not yet covered by a checkpoint")
    for c in r["contracts"]:
        click.echo(f"  {c['contract']:<14} {c['balance']:>28} {c['currency']}")
    if report.state is not None:
        click.echo(f"state saved in {state_path} at the checkpoint of size {report.state.tree_size}")


@cli.command()
@click.argument("seq", type=click.IntRange(0))
@click.option("--out", type=click.File("wb"), default="-", help="Write the receipt here [default: stdout].")
@db_option
@handled
def prove(seq, out, db_path):
    """Write a receipt for entry SEQ: C2SP tlog-proof@v1 with the entry,
    its inclusion proof and the latest checkpoint.

    Example: fundledger prove 42 --out entry-42.proof
    """
    out.write(api.prove(open_store(db_path, readonly=True), seq))


@cli.command("check-receipt")
@click.argument("receipt", type=click.File("rb"))
@click.option("--vkey", "vkeys", required=True, multiple=True,
              help="The log's first verifier key (or a file holding it): the trust anchor. Repeat it with later "
                   "log keys you know of: the receipt must then show the hand-over to each.")
@click.option("--witness", "witnesses", multiple=True, help="A witness's key (or file): require its cosignature. Repeatable.")
@click.option("--quorum", type=click.IntRange(1), default=None, help="How many of the --witness keys must have cosigned [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@handled
def check_receipt(receipt, vkeys, witnesses, quorum, as_json):
    """Check a receipt offline: signed checkpoint, signed entry, inclusion.

    After a key rotation the receipt carries the key entries with their
    proofs, so the log's first key suffices: the checkpoint must be signed
    by the key in force at its size, the entry by the key in force at its
    seq. Whoever holds a retired key can still sign a history in which the
    rotation never happened: require witnesses (--witness) to rule that out.

    Example: fundledger check-receipt entry-42.proof --vkey fund.vkey
    """
    from ledger.verify.verifier import load_vkey

    r = api.check_receipt(receipt.read(1 << 20), [load_vkey(v) for v in vkeys],
                          [load_vkey(w) for w in witnesses], quorum)
    if as_json:
        echo_json(r)
    else:
        click.echo(f"receipt verified: entry {r['seq']} is in the log of size {r['tree_size']}")
        if r["cosignatures"]:
            click.echo(f"cosigned by {', '.join(r['cosignatures'])}")


@cli.command()
@click.argument("old_checkpoint", type=click.File("rb"), required=False)
@click.option("--old-size", type=click.IntRange(0), default=None,
              help="Prove from this tree size instead of a checkpoint (0 for a new witness).")
@click.option("--out", type=click.File("wb"), default="-", help="Write the proof here [default: stdout].")
@db_option
@handled
def consistency(old_checkpoint, old_size, out, db_path):
    """Prove that the latest checkpoint extends OLD_CHECKPOINT (the body of a
    C2SP tlog-witness add-checkpoint request).

    A new witness holds no checkpoint yet: give it a proof from --old-size 0.

    Example: fundledger consistency yesterday.checkpoint --out request.txt
    """
    old = None if old_checkpoint is None else old_checkpoint.read(1 << 20)
    out.write(api.consistency(open_store(db_path, readonly=True), old, old_size))


@cli.command()
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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--witness", "witnesses", multiple=True,
              help="A witness's cosignature key (or file) the site checks cosignatures against. Repeatable; "
                   "without it every cosignature is shown as an unverified claim.")
@db_option
@handled
def serve(host, port, witnesses, db_path):
    """Serve the read-only transparency site (Datasette) and the log's C2SP
    tiles, live from the ledger database. The site verifies the log itself,
    in the background, and shows only the balances it verified.

    Example: fundledger serve --db demo/fund.db --port 8001
    """
    from publish.site import serve as run_site, witness_keys

    from ledger.verify.verifier import load_vkey

    keys = witness_keys([load_vkey(w) for w in witnesses])
    open_store(db_path, readonly=True).close()  # a clear error for a missing ledger
    run_site(db_path, host, port, keys)


@cli.command()
@click.option("--dir", "directory", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to build the demo (must not hold a ledger already).")
@click.option("--seed", default=2026, show_default=True, help="Random seed: the same seed gives the same market.")
@click.option("--liquidations", default=3000, show_default=True, type=click.IntRange(10, 10_000_000),
              help="How many liquidations to simulate.")
@handled
def demo(directory, seed, liquidations):
    """Tell the whole story on a simulated market: a ledger on the demo
    market's contracts, liquidations with surpluses and shortfalls, a
    volatile spell that drains a fund into ADL, checkpoints, verification
    and a static export.

    Example: fundledger demo --dir demo --seed 7
    """
    from ledger.ops.demo import run_demo

    run_demo(directory, seed=seed, liquidations=liquidations, echo=click.echo)


@cli.command("attach-cosignatures")
@click.argument("file", type=click.File("rb"))
@click.option("--witness", "witnesses", multiple=True, required=True, help="A witness's key (or file). Repeatable.")
@db_option
@handled
def attach_cosignatures(file, witnesses, db_path):
    """Keep witness cosignatures (C2SP tlog-cosignature lines in FILE) on the
    latest checkpoint; they are published with it from then on.

    Example: fundledger attach-cosignatures witness-reply.txt --witness witness.vkey
    """
    from ledger.verify.verifier import load_vkey

    names = api.attach_cosignatures(open_store(db_path), file.read(1 << 20), [load_vkey(w) for w in witnesses])
    click.echo(f"attached cosignatures by {', '.join(names)}")


@cli.group()
def key():
    """Manage the log's signing key."""


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


@cli.group()
def witness():
    """Run a witness: keep checkpoints of logs, cosign only consistent growth."""


def witness_options(f):
    f = click.option("--state", "state_path", default="witness.json", show_default=True,
                     type=click.Path(dir_okay=False), help="The witness's state file.")(f)
    return click.option("--key", "key_path", default="witness.key", show_default=True,
                        type=click.Path(dir_okay=False), help="The witness's key file.")(f)


@witness.command("init")
@click.argument("name")
@witness_options
@handled
def witness_init(name, key_path, state_path):
    """Create a witness key (cosignature/v1, 0600) named NAME and its state.

    Example: fundledger witness init witness.example.org
    """
    from ledger.ops.witness import init_witness

    signer = init_witness(key_path, state_path, name, vkey_path(key_path))
    click.echo(f"created {key_path} (secret), {vkey_path(key_path)} (public) and {state_path}")
    click.echo(f"witness key: {signer.verifier().vkey()}")


@witness.command("add-log")
@click.argument("vkey")
@witness_options
@handled
def witness_add_log(vkey, key_path, state_path):
    """Start witnessing the log with verifier key VKEY (or a file holding it).

    Example: fundledger witness add-log fund.vkey
    """
    from ledger.verify.verifier import load_vkey
    from ledger.ops.witness import add_log

    click.echo(f"witnessing {add_log(state_path, load_vkey(vkey).vkey())}")


@witness.command("add-checkpoint")
@click.argument("request", type=click.File("rb"))
@click.option("--out", type=click.File("wb"), default="-", help="Write the cosignature line here [default: stdout].")
@witness_options
@handled
def witness_add_checkpoint(request, out, key_path, state_path):
    """Cosign a checkpoint given a C2SP tlog-witness add-checkpoint REQUEST
    (what `fundledger consistency` writes), if it is consistent with the
    last one this witness cosigned.

    Example: fundledger witness add-checkpoint request.txt --out witness-reply.txt
    """
    from ledger.ops.witness import add_checkpoint

    out.write(add_checkpoint(key_path, state_path, request.read(1 << 20)))


@witness.command("add-key")
@click.argument("request", type=click.File("rb"))
@click.argument("key_proof", type=click.File("rb"))
@click.option("--out", type=click.File("wb"), default="-", help="Write the cosignature line here [default: stdout].")
@witness_options
@handled
def witness_add_key(request, key_proof, out, key_path, state_path):
    """Follow a rotation of a log's key, and cosign the checkpoint that shows it.

    REQUEST is an add-checkpoint request (`fundledger consistency`) whose
    checkpoint the new key signed; KEY_PROOF is the receipt of the key entry
    against that same checkpoint (`fundledger prove SEQ`). The key entry
    must come after the size this witness cosigned and be signed by the key
    in force there and by the new key. From then on this witness accepts
    the new key and refuses the retired one.

    Example: fundledger witness add-key request.txt key-entry.proof --out witness-reply.txt
    """
    from ledger.ops.witness import add_key

    out.write(add_key(key_path, state_path, request.read(1 << 20), key_proof.read(1 << 20)))


def main() -> None:  # console script
    cli(prog_name="fundledger")


if __name__ == "__main__":
    main()

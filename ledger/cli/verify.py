"""The auditor's commands: verify a log, check a receipt offline, and the
proofs an operator hands out for them (prove, consistency).

`fundledger verify` of an export or a URL needs only ledger.verify: the
store (and sqlite3) is imported by the commands that read a database, when
they run."""

from __future__ import annotations

import sys

import click

from ledger.errors import FundledgerError, VerificationError
from ledger.verify.transport import ENV_REQUEST_TIMEOUT, ENV_STALL_TIMEOUT, MAX_TIMEOUT_S, REQUEST_TIMEOUT_S, STALL_TIMEOUT_S

from .common import db_option, echo_json, fail, handled, load_vkeys, open_store


@click.command("verify")
@click.argument("source", required=False)
@click.option("--vkey", help="The log's verifier key (or a file holding it); default: the one the source publishes.")
@click.option("--trusted", "trusted_path", type=click.Path(dir_okay=False),
              help="A checkpoint you saved earlier: fail unless the log extends it.")
@click.option("--witness", "witnesses", multiple=True, help="A witness's key (or file): require its cosignature. Repeatable, each witness once.")
@click.option("--auditor", "auditors", multiple=True,
              help="An auditing witness's key (or file): a --witness whose cosignature also says every fund rule "
                   "holds up to the checkpoint (fundledger-audit/v1); the light check names it. Repeatable.")
@click.option("--quorum", type=click.IntRange(1), default=None, help="How many of the --witness keys must have cosigned [default: all].")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="A c2sp.org/tlog-policy file: its witnesses' quorum must have cosigned, and the log key in force "
                   "(from the log's own key history) must be one of its logs. Instead of --witness.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False),
              help="Incremental: resume from the state saved in this file (if any) and save the one at the latest checkpoint "
                   "(an SQLite file of your own; a run costs what is new).")
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="Worker processes checking entries; 0: the reference verifier alone [default: all cores].")
@click.option("--contract", "contract", metavar="SYMBOL",
              help="The light check of one fund: its chain, its head and the keys, never the whole log "
                   "(an export or a URL of a format-2 log).")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
@click.option("--request-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True), default=REQUEST_TIMEOUT_S,
              envvar=ENV_REQUEST_TIMEOUT, show_default=True, metavar="S",
              help="URL sources: seconds one file's whole request may take [env FUNDLEDGER_REQUEST_TIMEOUT].")
@click.option("--stall-timeout", type=click.FloatRange(0, MAX_TIMEOUT_S, min_open=True), default=STALL_TIMEOUT_S,
              envvar=ENV_STALL_TIMEOUT, show_default=True, metavar="S",
              help="URL sources: seconds without a byte before a request fails [env FUNDLEDGER_STALL_TIMEOUT].")
@db_option
def verify_cmd(source, vkey, trusted_path, witnesses, auditors, quorum, policy_path, state_path, workers, contract,
               as_json, request_timeout, stall_timeout, db_path):
    """Recompute every balance from the signed chain and check everything.

    SOURCE is a ledger database (default: --db), an export directory or the
    URL of a published site. Exit 0: verified; 1: verification failed (the
    first bad seq and why); 2: bad input.

    A database whose entries no checkpoint covers yet is verified all the
    same, and says so (--json: "checkpoint_size": null); an export or a URL
    without a checkpoint fails.

    With --contract SYMBOL, the light check of one fund instead: every entry
    of its chain is in the checkpointed log, signed, linked and computed by
    the fund rules, and its head is the one the operator signed. It does not
    show that no entry of the fund was left out of its chain: that takes the
    full check, or an auditing witness: name those you trust with --auditor
    (or in the --policy, `#fundledger-audit/v1 NAME`), and the output says
    which of them cosigned.

    Example: fundledger verify public/ --vkey fund.vkey --trusted yesterday.checkpoint
    """
    from ledger.verify.transport import Deadlines
    from ledger.verify.run import verify_path

    if contract is not None:
        return _verify_fund(source, contract, vkey, trusted_path, state_path, witnesses, quorum, as_json,
                            Deadlines(request_timeout, stall_timeout), policy_path, auditors)
    witnesses = (*witnesses, *auditors)  # the full check replays the rules itself: an auditor counts as a witness
    report = _verdict(as_json, lambda: verify_path(source or db_path, vkey, trusted_path, workers, witnesses,
                                                   quorum, state_path, Deadlines(request_timeout, stall_timeout),
                                                   policy_path))
    if state_path and report.state is None:
        click.echo(f"fundledger: no state saved in {state_path!r}: {report.state_note}", err=True)
    if as_json:
        echo_json(report.as_json())
        return
    echo_report(report, state_path)


def _verdict(as_json: bool, run):
    """``run()``'s result; a failed verification is exit 1 (its JSON with
    --json), bad input exit 2, each one line."""
    from ledger.verify.report import failure_json

    try:
        return run()
    except VerificationError as e:
        if as_json:
            echo_json(failure_json(e))
            sys.exit(1)
        fail(e)
    except FundledgerError as e:
        fail(e)


def _verify_fund(source, contract, vkey, trusted_path, state_path, witnesses, quorum, as_json, deadlines,
                 policy_path=None, auditors=()) -> None:
    from ledger.errors import InputError
    from ledger.verify.light import check_fund_path

    def run():
        if trusted_path or state_path:
            raise InputError("--contract does not take --trusted or --state: the light check starts afresh")
        if not source:
            raise InputError("--contract needs SOURCE: an export directory or a URL")
        return check_fund_path(source, contract, vkey, witnesses, quorum, deadlines, policy_path, auditors)

    result = _verdict(as_json, run)
    if as_json:
        echo_json(result.as_json())
        return
    echo_fund(result)


def echo_fund(r) -> None:
    """The human summary of a light check, with what it proves and what not."""
    from ledger.verify.light import WHAT_IT_DOES_NOT, WHAT_IT_PROVES

    f = r.fund
    click.echo(f"fund {r.contract} checked light at tree size {r.tree_size}: balance {f['balance']} {f['currency']}")
    click.echo(f"  {r.entries_checked} entries, from its contract entry to seq {f['last_seq']}; "
               f"{len(r.keys)} log key{'s' if len(r.keys) > 1 else ''} followed; "
               f"{r.hash_tiles_read} hash tiles read")
    plain = [n for n in r.cosigned_by if n not in r.audited_by]
    if r.audited_by:
        click.echo(f"  audited by {', '.join(r.audited_by)}: auditing witnesses, each replayed every fund rule "
                   f"up to size {r.tree_size} before it cosigned")
    if plain:
        click.echo(f"  cosigned by {', '.join(plain)} (plain witnesses: none of them replays the fund rules)")
    if not r.cosigned_by:
        click.echo("  no witness cosignature checked (name witnesses with --witness, auditing ones with --auditor)")
    if r.unverified_cosigners:
        click.echo(f"  other names on the checkpoint, not verified: {', '.join(r.unverified_cosigners)}")
    click.echo(f"proves: {WHAT_IT_PROVES}")
    if r.audited_by:
        click.echo(f"the chain is complete: {r.completeness()}")
        click.echo(f"without them, it would not prove: {WHAT_IT_DOES_NOT}")
    else:
        click.echo(f"does not prove: {WHAT_IT_DOES_NOT}; {r.completeness()}")


def echo_report(report, state_path: str | None) -> None:
    """The human summary of a verified log: size, root, checkpoint, balances."""
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


@click.command()
@click.argument("seq", type=click.IntRange(0), required=False)
@click.option("--contract", "contract", metavar="SYMBOL", help="With --liquidation: find the entry by liquidation id.")
@click.option("--liquidation", "liquidation_id", metavar="ID", help="The exchange's liquidation id (with --contract).")
@click.option("--out", type=click.File("wb"), default="-", help="Write the receipt here [default: stdout].")
@db_option
@handled
def prove(seq, contract, liquidation_id, out, db_path):
    """Write a receipt for entry SEQ: C2SP tlog-proof@v1 with the entry,
    its inclusion proof and the latest checkpoint.

    Or find the entry of a liquidation by its id: fundledger prove
    --contract XBTUSDTM --liquidation L-1. "Not recorded" (exit 2) is not a
    proof that the liquidation never happened, only that the exchange did
    not log it.

    Example: fundledger prove 42 --out entry-42.proof
    """
    from ledger.errors import InputError
    from ledger.ops import api

    by_id = contract is not None or liquidation_id is not None
    if (seq is None) != by_id or by_id and (contract is None or liquidation_id is None):
        raise InputError("give SEQ, or --contract and --liquidation")
    store = open_store(db_path, readonly=True)
    if seq is None:
        seq = api.liquidation_seq(store, contract, liquidation_id)
    out.write(api.prove(store, seq))


@click.command("check-receipt")
@click.argument("receipt", type=click.File("rb"))
@click.option("--vkey", "vkeys", required=True, multiple=True,
              help="The log's first verifier key (or a file holding it): the trust anchor. Repeat it with later "
                   "log keys you know of: the receipt must then show the hand-over to each.")
@click.option("--witness", "witnesses", multiple=True, help="A witness's key (or file): require its cosignature. Repeatable.")
@click.option("--quorum", type=click.IntRange(1), default=None, help="How many of the --witness keys must have cosigned [default: all].")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="A c2sp.org/tlog-policy file: its witnesses' quorum must have cosigned, and the log key in force "
                   "at the checkpoint's size must be one of its logs.")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@handled
def check_receipt(receipt, vkeys, witnesses, quorum, policy_path, as_json):
    """Check a receipt offline: signed checkpoint, signed entry, inclusion.

    After a key rotation the receipt carries the key entries with their
    proofs, so the log's first key suffices: the checkpoint must be signed
    by the key in force at its size, the entry by the key in force at its
    seq. Whoever holds a retired key can still sign a history in which the
    rotation never happened: require witnesses (--witness) to rule that out.

    Example: fundledger check-receipt entry-42.proof --vkey fund.vkey
    """
    from ledger.ops import api

    from ledger.verify.checkpoint import load_policy

    policy = None if policy_path is None else load_policy(policy_path)
    r = api.check_receipt(receipt.read(1 << 20), load_vkeys(vkeys), load_vkeys(witnesses), quorum, policy)
    if as_json:
        echo_json(r)
    else:
        click.echo(f"receipt verified: entry {r['seq']} is in the log of size {r['tree_size']}")
        if r["cosignatures"]:
            click.echo(f"cosigned by {', '.join(r['cosignatures'])}")


@click.command()
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
    from ledger.ops import api

    old = None if old_checkpoint is None else old_checkpoint.read(1 << 20)
    out.write(api.consistency(open_store(db_path, readonly=True), old, old_size))

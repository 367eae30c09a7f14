"""The witness's commands (`fundledger witness ...`): its own key and state
file, never a ledger database."""

from __future__ import annotations

import os

import click

from ledger.ops import witness as witness_ops

from .common import handled, load_vkeys, vkey_path


@click.group()
def witness():
    """Run a witness: keep checkpoints of logs, cosign only consistent growth."""


DEFAULT_STATE = "witness.db"
LEGACY_STATE = "witness.json"


def state_file(path: str) -> str:
    """The state to use: with the default --state, an existing witness.json
    of an earlier version when there is no witness.db (it is migrated to
    SQLite in place on first use)."""
    if path == DEFAULT_STATE and not os.path.lexists(DEFAULT_STATE) and os.path.lexists(LEGACY_STATE):
        return LEGACY_STATE
    return path


def witness_options(f):
    f = click.option("--state", "state_path", default=DEFAULT_STATE, show_default=True,
                     type=click.Path(dir_okay=False),
                     help="The witness's state (SQLite; a JSON state of an earlier version is migrated).")(f)
    return click.option("--key", "key_path", default="witness.key", show_default=True,
                        type=click.Path(dir_okay=False), help="The witness's key file.")(f)


@witness.command("init")
@click.argument("name")
@click.option("--algorithm", type=click.Choice(sorted(witness_ops.WITNESS_ALGORITHMS)), default="ed25519",
              show_default=True,
              help="The key's type: ed25519 (cosignature/v1, 0x04) or ml-dsa-44 (post-quantum, subtree/v1, 0x06).")
@click.option("--audit", "audit", is_flag=True,
              help="An auditing witness: it replays every fund rule of each log before it cosigns, with a key "
                   "of its own that never cosigns plainly (every add-log then needs --audit URL).")
@witness_options
@handled
def witness_init(name, algorithm, audit, key_path, state_path):
    """Create a witness key (0600) named NAME and its state.

    The key is Ed25519 (C2SP tlog-cosignature cosignature/v1) unless
    --algorithm ml-dsa-44 (the post-quantum subtree/v1 type). Every command
    that checks cosignatures takes either kind of witness key.

    Example: fundledger witness init witness.example.org --algorithm ml-dsa-44
    """
    signer = witness_ops.init_witness(key_path, state_path, name, vkey_path(key_path),
                                      witness_ops.WITNESS_ALGORITHMS[algorithm], audit=audit)
    click.echo(f"created {key_path} (secret), {vkey_path(key_path)} (public) and {state_path}")
    click.echo(f"{'auditing ' if audit else ''}witness key: {signer.verifier().vkey()}")


@witness.command("add-log")
@click.argument("vkey")
@click.option("--audit", "audit_url", metavar="URL",
              help="Audit this log (an auditing witness only): where it publishes its tiles and entry bundles "
                   "(its site or static export, or a directory). Before each cosignature the new entries are "
                   "read from there and every fund rule replayed.")
@witness_options
@handled
def witness_add_log(vkey, audit_url, key_path, state_path):
    """Start witnessing the log with verifier key VKEY (or a file holding it).

    Example: fundledger witness add-log fund.vkey
    """
    [log_key] = load_vkeys([vkey])
    origin = witness_ops.add_log(state_file(state_path), log_key.vkey(), audit_url)
    click.echo(f"{'auditing' if audit_url else 'witnessing'} {origin}")


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
    out.write(witness_ops.add_checkpoint(key_path, state_file(state_path), request.read(1 << 20)))


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
    out.write(witness_ops.add_key(key_path, state_file(state_path), request.read(1 << 20), key_proof.read(1 << 20)))


@witness.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8002, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port; the line printed names it).")
@click.option("--prefix", default="", help="URL prefix of the endpoints (e.g. /witness).")
@click.option("--max-body", default=64 << 10, show_default=True, type=click.IntRange(1, 1 << 24),
              help="Largest request body, bytes (413 above).")
@click.option("--read-timeout", default=10.0, show_default=True, type=float,
              help="Seconds to receive a request's body (408 after) or its headers (closed after).")
@click.option("--rate", default=2.0, show_default=True, type=float,
              help="Requests per second per client address, sustained (429 above).")
@click.option("--burst", default=20, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Requests per client address at once.")
@click.option("--max-concurrent", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Requests decided at once (503 above).")
@witness_options
@handled
def witness_serve(host, port, prefix, max_body, read_timeout, rate, burst, max_concurrent, key_path, state_path):
    """Serve this witness over HTTP (c2sp.org/tlog-witness), until SIGTERM or Ctrl-C.

    POST /add-checkpoint cosigns as `witness add-checkpoint` does, sharing
    its state (SQLite, compare-and-swap): the file commands may run while
    it serves. GET /checkpoint/ORIGIN (percent-encoded) returns the latest
    checkpoint it cosigned for that log with its cosignature; GET /metadata
    names this witness's key and what its cosignature attests; GET /health
    says ok. An auditing witness (`witness init --audit`) first replays the
    new entries from the log's tiles (422 if one breaks a rule). Prints
    `witness listening on http://HOST:PORT/` once bound. See docs/WITNESS.md.

    Example: fundledger witness serve --port 8002
    """
    from ledger.ops import witness_http

    limits = witness_http.Limits(max_body=max_body, read_timeout=read_timeout, header_timeout=read_timeout,
                                 rate=rate, burst=burst, max_concurrent=max_concurrent)
    witness_http.serve(key_path, state_file(state_path), host, port, prefix, limits)

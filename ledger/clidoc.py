"""Generate docs/CLI.md from the click help: ``python -m ledger.clidoc > docs/CLI.md``.

tests/test_docs.py fails when docs/CLI.md differs from this output, so the
reference can never fall behind the commands."""

from __future__ import annotations

import click

from ledger.cli import cli


def _walk(cmd: click.Command, path: list[str], parent: click.Context | None):
    """``(path, command, context)`` for ``cmd`` and everything below it; the
    contexts are chained as when the command runs, so settings such as the
    help option names are inherited exactly as at run time."""
    settings = {"terminal_width": 100, "max_content_width": 100, **cmd.context_settings}
    ctx = click.Context(cmd, info_name=path[-1], parent=parent, **settings)
    yield path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), path + [name], ctx)


def _contexts():
    return list(_walk(cli, ["fundledger"], None))


def commands() -> list[tuple[str, click.Command]]:
    """``("fundledger contract add", command)`` for every command and group."""
    return [(" ".join(p), c) for p, c, _ in _contexts()]


def render() -> str:
    out = [
        "# fundledger command reference",
        "",
        "Generated from the commands' own help by `python -m ledger.clidoc > docs/CLI.md`;",
        "a test fails when this page and the help differ.",
        "",
        "Exit codes: 0 success; 1 verification failed (the first bad seq and why);",
        "2 bad input or usage (one line on stderr, nothing written).",
        "",
    ]
    for path, cmd, ctx in _contexts():
        out += [f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    click.echo(render(), nl=False)

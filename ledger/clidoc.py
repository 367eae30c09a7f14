"""Generate docs/CLI.md from the click help: ``python -m ledger.clidoc > docs/CLI.md``.

tests/test_docs.py fails when docs/CLI.md differs from this output, so the
reference can never fall behind the commands."""

from __future__ import annotations

import click

from .cli import cli


def _walk(cmd: click.Command, path: list[str]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], path + [name])


def commands() -> list[tuple[str, click.Command]]:
    """``("fundledger contract add", command)`` for every command and group."""
    return [(" ".join(["fundledger", *p]), c) for p, c in _walk(cli, [])]


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
    for name, cmd in commands():
        ctx = click.Context(cmd, info_name=name, terminal_width=100, max_content_width=100)
        out += [f"## `{name}`", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    click.echo(render(), nl=False)

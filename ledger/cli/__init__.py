"""The ``fundledger`` command line: each command parses options, makes one
library call and prints. Expected failures become one line on stderr and exit
2 (bad input, nothing written) or 1 (verification failed).

The commands live in one module per user: ``writer`` (the operator's
database), ``verify`` (the auditor), ``witness`` and ``publish``. The group
imports a command's module only when that command runs (or help lists it), so
`fundledger verify` of an export or a URL never loads the writer, its store
or sqlite3."""

from __future__ import annotations

import importlib
import sys

import click

# command name -> "module:attribute" under ledger.cli
COMMANDS = {
    "init": "writer:init",
    "contract": "writer:contract",
    "liquidation": "writer:liquidation",
    "import": "writer:import_",
    "balance": "writer:balance",
    "history": "writer:history",
    "adl": "writer:adl",
    "checkpoint": "writer:checkpoint_cmd",
    "upgrade": "writer:upgrade",
    "attach-cosignatures": "writer:attach_cosignatures",
    "key": "writer:key",
    "verify": "verify:verify_cmd",
    "prove": "verify:prove",
    "check-receipt": "verify:check_receipt",
    "consistency": "verify:consistency",
    "monitor": "monitor:monitor",
    "run": "service:run_cmd",
    "witness": "witness:witness",
    "export": "publish:export",
    "serve": "publish:serve",
    "demo": "publish:demo",
}

# click >= 8.2 raises this for a group given no subcommand (8.1 prints the
# help itself and exits 0)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class OneLineErrors(click.Group):
    """A group whose usage errors are one line on stderr and exit 2, like
    every other bad input (click's default prints a usage block). A group
    called without a subcommand prints its whole help instead, readable.
    Its commands are loaded from :data:`COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

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


def main() -> None:  # console script
    cli(prog_name="fundledger")

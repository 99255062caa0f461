"""The `kallikratis` command line: parse, call the core, render, map errors to exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from kallikratis import __version__
from kallikratis.commands import (
    audit,
    backup,
    hub,
    lifecycle,
    patch,
    report,
    restore,
    restoretest,
    snapshots,
    stack,
)
from kallikratis.commands import images as images_cmd
from kallikratis.commands import keys as keys_cmd
from kallikratis.commands.common import Context, console_err
from kallikratis.errors import KallikratisError

EPILOG = """\b
Typical session:
  kallikratis -i inventories/crete validate
  kallikratis -i inventories/crete image build
  kallikratis -i inventories/crete plan
  kallikratis -i inventories/crete up --all
  kallikratis -i inventories/crete status
  kallikratis -i inventories/crete ssh hersonissos -- uptime
  kallikratis -i inventories/crete patch --all --dry-run
  kallikratis history hersonissos
  kallikratis -i inventories/crete report --html scorecard.html
  kallikratis -i inventories/crete backup --all
Onboarding a municipality = one new entry under municipalities in hosts.yml, then `up NAME`.
Exit codes: 0 ok, 1 failed or declined, 2 bad input, 3 hypervisor error,
4 image error, 5 some municipalities failed,
6 another run holds some of the municipalities (nothing was changed).
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-i",
    "--inventory",
    "inventory",
    envvar="KALLIKRATIS_INVENTORY",
    type=click.Path(path_type=Path),
    default=None,
    show_envvar=True,
    help="Ansible inventory of the fleet (directory or hosts.yml).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(__version__, prog_name="kallikratis")
@click.pass_context
def main_group(ctx: click.Context, inventory: Path | None, verbose: int) -> None:
    """Run one VM per municipality on libvirt, from one Ansible inventory.

    Desired state lives in the inventory; actual state in libvirt. Every command that
    changes something is idempotent: run it twice and the second run changes nothing.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Context(inventory)


for command in (
    *lifecycle.COMMANDS,
    *stack.COMMANDS,
    *patch.COMMANDS,
    images_cmd.image,
    *audit.COMMANDS,
    *keys_cmd.COMMANDS,
    *snapshots.COMMANDS,
    *report.COMMANDS,
    *backup.COMMANDS,
    *hub.COMMANDS,
    *restore.COMMANDS,
    *restoretest.COMMANDS,
):
    main_group.add_command(command)


def main() -> None:
    try:
        main_group.main(standalone_mode=False)
    except click.exceptions.Abort:
        console_err.print("aborted")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KallikratisError as exc:
        console_err.print(f"[bold red]error:[/] {exc.message}", highlight=False, markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console_err.print("interrupted; re-run the same command to converge")
        sys.exit(130)


if __name__ == "__main__":
    main()

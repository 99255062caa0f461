"""`kallikratis snapshots prune`: delete pre-patch snapshots past patch_snapshot_max_age."""

from __future__ import annotations

import time

import click
from rich.table import Table

from kallikratis.commands.audit import audited
from kallikratis.commands.common import (
    Context,
    all_opt,
    console,
    emit_json,
    esc,
    json_option,
    names_arg,
    pass_ctx,
)
from kallikratis.errors import KallikratisError
from kallikratis.selection import select
from kallikratis.snapshotage import prune_expired


class PruneError(KallikratisError):
    """Some expired snapshots could not be deleted."""

    exit_code = 3


@click.group("snapshots")
def snapshots() -> None:
    """Pre-patch snapshots (named kk-patch-...; others are never touched)."""


@snapshots.command("prune")
@names_arg
@all_opt
@click.option("--dry-run", is_flag=True, help="List the expired snapshots; delete nothing.")
@json_option
@pass_ctx
def prune_cmd(
    ctx: Context, names: tuple[str, ...], all_: bool, dry_run: bool, as_json: bool
) -> None:
    """Delete snapshots older than patch_snapshot_max_age (default 7d).

    \b
    Memory snapshots hold what was in the VM's memory (personal data). Every patch run
    prunes its municipalities at its start and its end; this command is for the others
    (and for a cron job). Municipalities held by a running patch run are refused (exit 6).
    Without names: every municipality.

    \b
    Examples:
      kallikratis snapshots prune --dry-run
      kallikratis snapshots prune hersonissos --json
    """
    selection = select(ctx.fleet, names, all_)
    slugs = [m.slug for m in selection]
    with audited(ctx, "snapshots prune", slugs, changes=not dry_run) as record:
        pruned = prune_expired(ctx.engine.backend, selection, time.time(), dry_run=dry_run)
        for p in pruned:
            if not dry_run:
                record.result(p.slug, p.result, p.snapshot, 0.0)
    if as_json:
        emit_json({"dry_run": dry_run, "snapshots": pruned})
    else:
        table = Table(title="expired snapshots" + (" (dry run)" if dry_run else ""))
        for col in ("municipality", "snapshot", "age (days)", "result"):
            table.add_column(col)
        for p in pruned:
            table.add_row(
                esc(p.slug), esc(p.snapshot), f"{p.age_seconds / 86400:.1f}", esc(p.result)
            )
        console.print(table if pruned else "no expired snapshots")
    failed = [f"{p.slug} {p.snapshot}".strip() for p in pruned if p.result.startswith("failed")]
    if failed:
        raise PruneError(f"could not prune: {', '.join(failed)}")


COMMANDS = (snapshots,)

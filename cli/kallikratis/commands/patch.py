"""`kallikratis patch`: OS updates and the stack, in waves, each VM behind a snapshot."""

from __future__ import annotations

import signal
import time
import types
from typing import Any

import click
from rich.table import Table

from kallikratis import patch, patchmetrics, patchwaves
from kallikratis.commands.audit import audited
from kallikratis.commands.common import (
    Context,
    all_opt,
    console,
    console_err,
    emit_json,
    esc,
    json_option,
    names_arg,
    pass_ctx,
)
from kallikratis.commands.progress import PhaseBoard
from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest
from kallikratis.journal import RunRecord
from kallikratis.patchsteps import fleet_steps
from kallikratis.selection import select
from kallikratis.stack import prepare_stack

COLOURS = {"patched": "green", "unchanged": "green", "planned": "cyan", "failed": "red"}


class PatchError(KallikratisError):
    """Some municipalities failed their patch (and were reverted) or were not reached."""

    exit_code = 5


def _journal(record: RunRecord) -> patch.RecordFn:
    def write(o: patch.Outcome) -> None:
        if o.result != "planned":
            record.result(o.slug, o.result, o.summary()[:1500], round(o.seconds, 1))

    return write


def _interrupt_on_sigterm() -> None:
    """systemd stops a run with SIGTERM: unwind like Ctrl-C, so unfinished VMs are reverted."""

    def handler(_signum: int, _frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _as_json(outcomes: list[patch.Outcome], options: patch.Options) -> dict[str, Any]:
    return {
        "dry_run": options.dry_run,
        "security_only": options.security_only,
        "municipalities": [
            {
                "slug": o.slug,
                "wave": o.wave,
                "result": o.result,
                "reason": o.reason,
                "upgrades": [
                    {"package": u.package, "old": u.old, "new": u.new, "origin": u.origin}
                    for u in o.upgrades
                ],
                "stack_changes": o.stack_changes,
                "rebooted": o.rebooted,
                "reverted": o.reverted,
                "snapshot": o.snapshot,
                "expired_snapshots": o.pruned,
                "seconds": round(o.seconds, 1),
                "timings": {k: round(v, 2) for k, v in o.timings.items()},
            }
            for o in outcomes
        ],
    }


def _print(outcomes: list[patch.Outcome], options: patch.Options) -> None:
    title = "patch plan (dry run: nothing changed)" if options.dry_run else "patch"
    table = Table(title=title, title_justify="left")
    columns = ("municipality", "wave", "result", "packages (old → new)", "stack", "reboot", "time")
    for col in columns:
        table.add_column(col)
    for o in outcomes:
        colour = COLOURS.get(o.result, "yellow")
        packages = "\n".join(esc(u) + (" [security]" if u.security else "") for u in o.upgrades)
        stack = "-" if o.stack_changes is None else f"{o.stack_changes} changed"
        table.add_row(
            esc(o.slug),
            str(o.wave or "-"),
            f"[{colour}]{esc(o.result)}[/]",
            packages or "-",
            stack,
            "yes" if o.rebooted else "no",
            f"{o.seconds:.0f} s",
        )
    console.print(table)
    for o in outcomes:
        if o.reason:
            console.print(f"[{COLOURS.get(o.result, 'yellow')}]{esc(o.slug)}[/]: {esc(o.reason)}")


@click.command("patch")
@names_arg
@all_opt
@click.option("--security-only", is_flag=True, help="Only updates from security archives.")
@click.option(
    "--canary",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="Municipalities patched first, alone, before any batch.",
)
@click.option(
    "--batch",
    default="10",
    show_default=True,
    metavar="N|P%",
    help="How many municipalities are patched at once after the canary.",
)
@click.option(
    "--max-fail",
    default="0",
    show_default=True,
    metavar="N|P%",
    help="Stop starting new waves once more than this many have failed.",
)
@click.option(
    "--dry-run", is_flag=True, help="List pending updates per municipality; change nothing."
)
@click.option(
    "--scheduled",
    is_flag=True,
    help="Unattended run (the systemd timer): only municipalities inside their patch_window.",
)
@json_option
@pass_ctx
def patch_cmd(
    ctx: Context,
    names: tuple[str, ...],
    all_: bool,
    security_only: bool,
    canary: int,
    batch: str,
    max_fail: str,
    dry_run: bool,
    scheduled: bool,
    as_json: bool,
) -> None:
    """Update municipality VMs: OS packages and the stack, in waves, with automatic rollback.

    \b
    For each municipality with something pending:
      1. list pending updates (packages old → new; stack changes by a check-mode deploy)
      2. maintenance mode: citizens get a 503 notice (Greek and English)
      3. libvirt snapshot with memory (consistent without freezing filesystems)
      4. apt-get dist-upgrade, needrestart restarts services; then the stack deploy
      5. reboot if the guest asks (/run/reboot-required)
      6. verify checks; maintenance mode off; keep the last patch_keep_snapshots snapshots
         (at the start and the end of a run, those older than patch_snapshot_max_age go)
      7. on any failure: revert to the snapshot, confirm it serves, mark it failed
    Waves: --canary first, then --batch at a time. The run stops when failures exceed
    --max-fail; the rest are reported as skipped. Exit 5 when any municipality failed.
    A second run touching the same municipalities is refused (exit 6).

    \b
    Examples:
      kallikratis patch --all --dry-run
      kallikratis patch --all --canary 1 --batch 20% --max-fail 2
      kallikratis patch hersonissos --security-only
    """
    selection = select(ctx.fleet, names, all_, required=True)
    # check the numbers before anything else happens
    patchwaves.waves([m.slug for m in selection], canary, batch)
    patchwaves.allowed_failures(max_fail, len(selection))
    engine = ctx.engine
    if not dry_run:
        _interrupt_on_sigterm()
    with audited(ctx, "patch", [m.slug for m in selection], changes=not dry_run) as record:
        prepare_stack(ctx.fleet, engine.keys, engine.state_dir, selection)
        options = patch.Options(
            security_only=security_only,
            canary=canary,
            batch=batch,
            max_fail=max_fail,
            dry_run=dry_run,
            scheduled=scheduled,
            run_id=record.id,
        )
        title = "patch" + (" --dry-run" if dry_run else "")
        with PhaseBoard([m.slug for m in selection], title) as board:
            run = patch.PatchRun(
                engine.backend,
                selection,
                options,
                fleet_steps(engine, board, record.artifacts),
                board,
                _journal(record),
            )
            outcomes = run.run()
        if not dry_run:
            warning = patchmetrics.publish(
                ctx.fleet,
                [(o.slug, o.result) for o in outcomes],
                time.time(),
                lambda m: Guest(engine.target(m)),
            )
            if warning:
                console_err.print(f"[yellow]warning:[/] {warning}")
        if as_json:
            emit_json(_as_json(outcomes, options))
        else:
            _print(outcomes, options)
        failed = [o.slug for o in outcomes if o.result == "failed"]
        if failed:
            raise PatchError(f"patch failed on: {', '.join(failed)}")


COMMANDS = (patch_cmd,)

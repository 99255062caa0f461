"""`kallikratis restore-test`: each municipality's latest archive restored into a throwaway VM
on an isolated network, verified, content-checked, removed."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.table import Table

from kallikratis import (
    backups,
    model,
    restore,
    restorefleet,
    restoretestmetrics,
    runlock,
    secrets,
)
from kallikratis.commands.backup import store_of
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
from kallikratis.errors import KallikratisError, LockedError, UsageError
from kallikratis.journal import Journal
from kallikratis.restoretest import RestoreTest, RestoreTestError, RestoreTestOutcome
from kallikratis.selection import select

#: one restore test of a fleet at a time: they share the isolated network and derived fleet
LOCK_NAME = "_restore-test"


def _json(o: RestoreTestOutcome) -> dict[str, Any]:
    return {
        "slug": o.slug,
        "archive": o.archive,
        "result": o.result,
        "seconds": round(o.seconds, 1),
        "phases": o.timings,
        "verify": o.verify,
        "expected": o.expected,
        "actual": o.actual,
        "content": o.content,
        "detail": o.detail,
        "leftover": o.leftover,
    }


def _print(outcomes: list[RestoreTestOutcome]) -> None:
    table = Table(title="restore-test", title_justify="left")
    for col in ("municipality", "result", "archive", "verify", "content (archive)", "time"):
        table.add_column(col)
    for o in outcomes:
        colour = "green" if o.result == "passed" else "red"
        content = ", ".join(f"{v} {k}" for k, v in o.expected.items() if v) or "-"
        table.add_row(
            esc(o.slug),
            f"[{colour}]{esc(o.result)}[/]",
            esc(o.archive or "-"),
            esc(o.verify or "-"),
            esc(content),
            f"{o.seconds:.0f} s",
        )
    console.print(table)
    for o in outcomes:
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in o.timings.items())
        console.print(f"{esc(o.slug)}: {esc(phases)}")
        if o.detail:
            console.print(f"[red]{esc(o.slug)}[/]: {esc(o.detail)}")


def _one(
    ctx: Context, store: backups.Store, m: model.Municipality, board: PhaseBoard, keep: bool
) -> RestoreTestOutcome:
    engine = ctx.engine
    try:
        archive = restore.choose(m.slug, store.archives(m.slug), None)
        restore.check_owner(m.slug, archive.name)  # a repository holds its municipality's only
    except KallikratisError as exc:
        board(m.slug, "failed")
        return RestoreTestOutcome(m.slug, detail=f"no archive to test: {exc.message}")
    test = RestoreTest(
        ctx.fleet,
        m,
        state_dir=engine.state_dir,
        backend_factory=engine.backend_factory,
        control=store.guest,
        passphrase=lambda: secrets.read_secret(
            ctx.fleet, m.slug, engine.keys, "vault_backup_passphrase"
        ),
        progress=lambda phase: board(m.slug, phase),
        keep_on_failure=keep,
    )
    outcome = test.run(archive.name)
    board(m.slug, outcome.result)
    return outcome


@click.command("restore-test")
@names_arg
@all_opt
@click.option(
    "--keep-on-failure",
    is_flag=True,
    help="Leave a failed test's throwaway VM for inspection (the next run removes it).",
)
@json_option
@pass_ctx
def restore_test_cmd(
    ctx: Context, names: tuple[str, ...], all_: bool, keep_on_failure: bool, as_json: bool
) -> None:
    """Prove the backups: restore each one's latest archive into a throwaway VM and check it.

    \b
    Per municipality, one after the other: a throwaway VM <fleet>-rt-<slug>-rt on an
    isolated host-only network (restore_test_network), deployed like the original; the
    archive streamed from control through the controller into it; WordPress' and Kolibri's
    dumps loaded; the verify suites; a content check against the archive itself (published
    posts, approved comments, users, uploads, Kolibri users). Then the throwaway is removed,
    also on failure or Ctrl-C. The original VM is not touched. Results go to the journal and
    to control's monitoring (alerts RestoreTestFailed, RestoreTestTooOld). Exit 5 if any
    failed.

    \b
    Examples:
      kallikratis restore-test hersonissos
      kallikratis restore-test --all --json
    """
    if all_ and names:
        raise UsageError("give NAMES or --all, not both")
    chosen = ctx.fleet.tenants if all_ else select(ctx.fleet, names, False, required=True)
    selection = backups.tenants_only(chosen)
    for m in selection:
        restorefleet.check_names(ctx.fleet, m)
    store = store_of(ctx)
    slugs = [m.slug for m in selection]
    state, argv = ctx.engine.state_dir, list(sys.argv)
    # one restore test of a fleet at a time; each municipality locked only while its own test
    # runs (a backup's prune meanwhile would wait on the repository), not the whole run long
    with (
        runlock.hold(state, ctx.declared.name, [LOCK_NAME], argv),
        Journal(state).run("restore-test", argv, ctx.declared.inventory, slugs) as record,
    ):
        outcomes = []
        with PhaseBoard(slugs, "restore-test") as board:
            for m in selection:
                try:
                    with runlock.hold(state, ctx.declared.name, [m.slug], argv):
                        o = _one(ctx, store, m, board, keep_on_failure)
                except LockedError as exc:  # that one fails alone
                    board(m.slug, "failed")
                    o = RestoreTestOutcome(m.slug, detail=exc.message)
                outcomes.append(o)
                record.result(
                    m.slug, o.result, f"{o.archive} {o.detail}"[:1500], round(o.seconds, 1)
                )
        warning = restoretestmetrics.publish(outcomes, time.time(), store.guest)
        if warning:
            console_err.print(f"[yellow]warning:[/] {esc(warning)}")
        if as_json:
            emit_json({"results": [_json(o) for o in outcomes]})
        else:
            _print(outcomes)
        failed = [o.slug for o in outcomes if o.result != "passed"]
        if failed:
            raise RestoreTestError(f"restore test failed: {', '.join(failed)}")


COMMANDS = (restore_test_cmd,)

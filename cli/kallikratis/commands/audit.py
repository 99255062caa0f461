"""Audit and unattended runs: the journal + lock around mutating commands, history, schedule."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from kallikratis import paths, runlock, schedule
from kallikratis.ansible import PlaybookRun
from kallikratis.commands.common import Context, console, emit_json, esc, json_option, pass_ctx
from kallikratis.errors import UsageError
from kallikratis.journal import Journal, RunEntry, RunRecord
from kallikratis.keys import VAULT_PASSWORD_ENV
from kallikratis.provision import UpResult
from kallikratis.report import PROMETHEUS_URL_ENV

F = TypeVar("F", bound=Callable[..., Any])

#: settings the scheduled run needs as they are now (paths only, never secrets themselves)
PASSED_ENV = (VAULT_PASSWORD_ENV, "KALLIKRATIS_IMAGE_CACHE")
STATUS_COLOURS = {"ok": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}


class _NoRecord(RunRecord):
    """Stands in for a journal record when a command changes nothing (check mode)."""

    def __init__(self) -> None:
        self.id = 0

    def result(
        self, slug: str, result: str, detail: str = "", seconds: float | None = None
    ) -> None:
        pass

    def artifacts(self, path: Path | str) -> None:
        pass


@contextmanager
def audited(
    ctx: Context, command: str, slugs: Sequence[str], *, changes: bool = True
) -> Iterator[RunRecord]:
    """Lock *slugs* (refusing at once if another run holds any), then journal the run.

    Enter it before anything changes: a refused run changes nothing and is not journaled.
    With ``changes=False`` (check mode) neither lock nor journal: it yields a no-op record.
    """
    if not changes:
        yield _NoRecord()
        return
    state = ctx.engine.state_dir
    argv = list(sys.argv)
    with (
        runlock.hold(state, ctx.declared.name, slugs, argv),
        Journal(state).run(command, argv, ctx.declared.inventory, slugs) as record,
    ):
        yield record


def record_results(record: RunRecord, results: Iterable[UpResult], step: str = "") -> None:
    for r in results:
        detail = f"{step}: {r.detail}" if step and r.detail else (step or r.detail)
        record.result(r.slug, r.result, detail, round(r.seconds, 1))


def record_playbook(record: RunRecord, run: PlaybookRun, step: str = "deploy") -> None:
    record.artifacts(run.artifacts)
    for slug, host in run.hosts.items():
        if host.failures:
            task, message = host.failures[0]
            detail = f"{step}: task {task}: {message[:300]}"
        else:
            detail = f"{step}: {host.changed} changed"
        record.result(slug, host.result, detail, round(run.seconds, 1))


# -- history -----------------------------------------------------------------------------------
def _who(run: RunEntry) -> str:
    return f"{run.sudo_user} (as {run.user})" if run.sudo_user else run.user


def _commit(run: RunEntry) -> str:
    if run.git_commit is None:
        return "-"
    return run.git_commit[:10] + (" +dirty" if run.git_dirty else "")


def _command(run: RunEntry) -> str:
    words = list(run.argv[1:]) if run.argv else [run.command]
    return shlex.join(words) if words else run.command


def _history_table(runs: list[RunEntry], name: str | None) -> Table:
    title = "history" + (f" of {name}" if name else "")
    table = Table(title=esc(title), title_justify="left")
    for col in ("id", "started (UTC)", "who", "command", "commit", "status", "municipalities"):
        table.add_column(col)
    for run in runs:
        results = run.results
        if name is not None:
            results = tuple(r for r in results if r.slug == name)
        shown = "\n".join(
            f"{r.slug}: {r.result}" + (f" ({r.detail})" if r.detail else "") for r in results
        )
        colour = STATUS_COLOURS.get(run.status, "")
        status = run.status if run.exit_code in (None, 0) else f"{run.status} ({run.exit_code})"
        table.add_row(
            str(run.id),
            run.started.replace("T", " ").removesuffix("+00:00"),
            esc(_who(run)),
            esc(_command(run)),
            esc(_commit(run)),
            f"[{colour}]{esc(status)}[/]" if colour else esc(status),
            esc(shown),
        )
    return table


@click.command()
@click.argument("name", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@json_option
def history(name: str | None, limit: int, as_json: bool) -> None:
    """Runs that changed something: who, when, command, inventory commit, results.

    With NAME, only runs that touched that municipality. A run whose process died without
    finishing shows as `interrupted`. Read from the journal in the state directory; needs
    no inventory.
    """
    runs = Journal(paths.state_dir()).runs(name, limit)
    if as_json:
        emit_json({"runs": runs})
        return
    if not runs:
        console.print("no runs recorded" + (f" for {esc(name)}" if name else ""))
        return
    console.print(_history_table(runs, name))


# -- schedule ----------------------------------------------------------------------------------
def _calendar(example: str) -> Callable[[F], F]:
    return click.option(
        "--on-calendar",
        required=True,
        help=f"When, as a systemd calendar expression, e.g. {example}.",
    )


def _timeout_hours(default: int) -> Callable[[F], F]:
    return click.option(
        "--timeout-hours",
        default=default,
        show_default=True,
        type=click.IntRange(1, 72),
        help="Stop a run still going after this long (TimeoutStartSec).",
    )


_print_units = click.option(
    "--print", "print_", is_flag=True, help="Print the units instead of installing."
)


def _unit_place(ctx: Context, on_calendar: str) -> dict[str, Any]:
    """What every scheduled unit names: when, which inventory and state, which fleet (the
    inventory is loaded and validated here)."""
    schedule.check_calendar(on_calendar)
    if ctx.inventory_path is None:
        raise UsageError("no inventory: pass -i PATH or set KALLIKRATIS_INVENTORY")
    return {
        "on_calendar": on_calendar,
        "inventory": Path(ctx.inventory_path).resolve(),
        "state_dir": paths.state_dir().resolve(),
        "fleet": ctx.declared.name,
    }


@click.group("schedule")
def schedule_group() -> None:
    """Unattended runs from systemd timers."""


@schedule_group.command("patch")
@_calendar("'Sun *-*-* 02:00'")
@click.option("--name", default="", help="Unit name suffix: kallikratis-patch-NAME.")
@_timeout_hours(4)
@_print_units
@pass_ctx
def schedule_patch(
    ctx: Context, on_calendar: str, name: str, timeout_hours: int, print_: bool
) -> None:
    """Install a systemd timer that runs `patch --all --scheduled` on this inventory.

    The timer is persistent (a run missed while the host was down happens at boot) with a
    small random delay. The patch run itself is the `patch` command; it is the one meant to
    honour each municipality's `patch_window` from the inventory.
    KALLIKRATIS_VAULT_PASSWORD_FILE and KALLIKRATIS_IMAGE_CACHE, when set, are passed on.
    Installing needs root and systemd as init; --print shows the two unit files instead.
    """
    units = schedule.patch_units(
        **_unit_place(ctx, on_calendar),
        name=name,
        timeout_hours=timeout_hours,
        environment={k: os.environ[k] for k in PASSED_ENV if k in os.environ},
    )
    _install_or_print(units, print_)


def _install_or_print(units: schedule.Units, print_: bool) -> None:
    if print_:
        for filename, text in units.files().items():
            click.echo(f"# /etc/systemd/system/{filename}\n{text}")
        return
    written = schedule.install(units)
    for path in written:
        console.print(f"wrote {esc(path)}")
    console.print(
        f"enabled {esc(units.name)}.timer; see `systemctl list-timers {esc(units.name)}.timer`"
    )


@schedule_group.command("report")
@_calendar("'hourly' or '*-*-* *:00/15'")
@click.option("--name", default="", help="Unit name suffix: kallikratis-report-NAME.")
@_print_units
@pass_ctx
def schedule_report(ctx: Context, on_calendar: str, name: str, print_: bool) -> None:
    """Install a systemd timer that runs `report --publish`: the dashboard on the control VM
    (https://control.<fleet_domain>/) is refreshed at every run.

    A run that finds red municipalities (exit 5) still counts as a success of the unit; one
    that cannot publish fails it (`systemctl status kallikratis-report`).
    KALLIKRATIS_PROMETHEUS_URL, when set, is passed on. --print shows the two unit files.
    """
    passed = (*PASSED_ENV, PROMETHEUS_URL_ENV)
    units = schedule.report_units(
        **_unit_place(ctx, on_calendar),
        name=name,
        environment={k: os.environ[k] for k in passed if k in os.environ},
    )
    _install_or_print(units, print_)


@schedule_group.command("backup")
@_calendar("'*-*-* 02:00' or 'daily'")
@click.option("--name", default="", help="Unit name suffix: kallikratis-backup-NAME.")
@_timeout_hours(6)
@_print_units
@pass_ctx
def schedule_backup(
    ctx: Context, on_calendar: str, name: str, timeout_hours: int, print_: bool
) -> None:
    """Install a systemd timer that runs `backup --all` on this inventory.

    Daily at least: the monitoring's BackupTooOld alert fires after 26 h without a good
    backup. A run where some municipality was not backed up (exit 5) fails the unit.
    KALLIKRATIS_VAULT_PASSWORD_FILE (the passphrases are in the vault) and
    KALLIKRATIS_IMAGE_CACHE, when set, are passed on. --print shows the two unit files.

    \b
    Example:
      kallikratis schedule backup --on-calendar '*-*-* 02:00'
    """
    units = schedule.backup_units(
        **_unit_place(ctx, on_calendar),
        name=name,
        timeout_hours=timeout_hours,
        environment={k: os.environ[k] for k in PASSED_ENV if k in os.environ},
    )
    _install_or_print(units, print_)


@schedule_group.command("restore-test")
@click.option(
    "--on-calendar",
    default=schedule.RESTORE_TEST_CALENDAR,
    show_default=True,
    help="When, as a systemd calendar expression (weekly by default).",
)
@click.option("--name", default="", help="Unit name suffix: kallikratis-restore-test-NAME.")
@_timeout_hours(12)
@_print_units
@pass_ctx
def schedule_restore_test(
    ctx: Context, on_calendar: str, name: str, timeout_hours: int, print_: bool
) -> None:
    """Install a systemd timer that runs `restore-test --all` on this inventory.

    Weekly by default (a throwaway VM per municipality, one after the other): the
    monitoring's RestoreTestTooOld alert fires after 8 days without a passed test, and
    RestoreTestFailed on a failed one. A run where some test failed (exit 5) fails the unit.
    KALLIKRATIS_VAULT_PASSWORD_FILE and KALLIKRATIS_IMAGE_CACHE, when set, are passed on.

    \b
    Example:
      kallikratis schedule restore-test --on-calendar 'Sat *-*-* 05:00'
    """
    units = schedule.restore_test_units(
        **_unit_place(ctx, on_calendar),
        name=name,
        timeout_hours=timeout_hours,
        environment={k: os.environ[k] for k in PASSED_ENV if k in os.environ},
    )
    _install_or_print(units, print_)


COMMANDS = (history, schedule_group)

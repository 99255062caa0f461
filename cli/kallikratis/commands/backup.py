"""`kallikratis backup`, `backups` (and destroy's final backup): borgmatic archives on control."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from kallikratis import backupmetrics, backups, backupstore, model, secrets
from kallikratis.commands import backupoffsite as offsite
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
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.guest import Guest
from kallikratis.journal import RunRecord
from kallikratis.selection import select


def size(n: int) -> str:
    """Bytes as a short human figure (binary units)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def store_of(ctx: Context) -> backups.Store:
    """control's backup store; the passphrases come from the vault, one at a time."""
    control = backups.require_control(ctx.fleet)
    engine = ctx.engine

    def passphrase_of(slug: str) -> str:
        return secrets.read_secret(ctx.fleet, slug, engine.keys, "vault_backup_passphrase")

    return backups.Store(Guest(engine.target(control)), passphrase_of)


def _archive_json(a: backups.Archive | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "name": a.name,
        "start": a.start,
        "original_size": a.original_size,
        "compressed_size": a.compressed_size,
        "deduplicated_size": a.deduplicated_size,
        "files": a.nfiles,
    }


def _print_outcomes(outcomes: list[backups.Outcome]) -> None:
    table = Table(title="backup", title_justify="left")
    for col in ("municipality", "result", "archive", "size", "deduplicated", "pruned", "time"):
        table.add_column(col)
    for o in outcomes:
        a = o.archive
        colour = {"ok": "green", "partial": "yellow"}.get(o.result, "red")
        shown = "ok (remote failed)" if o.result == "partial" else o.result
        table.add_row(
            esc(o.slug),
            f"[{colour}]{esc(shown)}[/]",
            esc(a.name) if a else "-",
            size(a.original_size) if a else "-",
            size(a.deduplicated_size) if a else "-",
            str(len(o.pruned)),
            f"{o.seconds:.0f} s",
        )
    console.print(table)
    for o in outcomes:
        for note in o.notes:
            console.print(f"[yellow]{esc(o.slug)}[/]: {esc(note)}")
        if o.remote_archive is not None:
            console.print(f"{esc(o.slug)}: off-site copy {esc(o.remote_archive.name)}")
        if o.detail:
            console.print(f"[red]{esc(o.slug)}[/]: {esc(o.detail)}")


@click.command("backup")
@names_arg
@all_opt
@click.option(
    "--parallel",
    default=backups.DEFAULT_PARALLEL,
    show_default=True,
    type=click.IntRange(min=1, max=64),
    help="Municipalities backed up at once.",
)
@json_option
@pass_ctx
def backup_cmd(
    ctx: Context, names: tuple[str, ...], all_: bool, parallel: int, as_json: bool
) -> None:
    """Back up municipalities now into their repositories on the control VM.

    \b
    Per municipality, on its VM: borgmatic makes the repository if it is missing, then one
    archive (WordPress' database dumped with --single-transaction, uploads, Kolibri's home
    and database, /etc/kallikratis). Then, on control, prune per backup_keep and compact.
    A VM that cannot be reached fails alone: the others are backed up, exit 5.

    \b
    With backup_remote, each VM also writes the same archive to its repository on the
    off-site remote; when that copy fails but control's was made, the municipality is
    `partial` ("ok (remote failed)"), exit 5.

    \b
    `kallikratis backup remote-keys [--json]` prints, per municipality, the authorized_keys
    line the remote's operator installs (its VM's backup public key, append-only, its own
    repository only).

    \b
    Examples:
      kallikratis backup --all
      kallikratis backup hersonissos --json
      kallikratis backup remote-keys
    """
    if names == (offsite.REMOTE_KEYS,) and not all_ and not offsite.is_municipality(ctx):
        offsite.print_remote_keys(ctx, as_json)
        return
    if all_ and names:
        raise UsageError("give NAMES or --all, not both")
    chosen = ctx.fleet.tenants if all_ else select(ctx.fleet, names, False, required=True)
    selection = backups.tenants_only(chosen)
    store = store_of(ctx)
    engine = ctx.engine
    slugs = [m.slug for m in selection]
    with audited(ctx, "backup", slugs) as record:
        with PhaseBoard(slugs, "backup") as board:
            for slug in slugs:
                board(slug, "backing up")

            def done(o: backups.Outcome) -> None:
                board(
                    o.slug, {"ok": "backed up", "partial": "control only"}.get(o.result, "failed")
                )
                name = o.archive.name if o.archive else ""
                off = f"off-site {o.remote_archive.name}" if o.remote_archive else ""
                text = " ".join([name, off, o.detail, *o.notes]).strip()
                record.result(o.slug, o.result, text[:1500], o.seconds)

            outcomes = backups.run(
                selection, lambda m: Guest(engine.target(m)), store, parallel=parallel, done=done
            )
        assert ctx.fleet.control is not None  # require_control above
        warning = backupmetrics.publish(
            outcomes, time.time(), Guest(engine.target(ctx.fleet.control))
        )
        if warning:
            console_err.print(f"[yellow]warning:[/] {esc(warning)}")
        if as_json:
            emit_json(
                {
                    "municipalities": [
                        {
                            "slug": o.slug,
                            "result": o.result,
                            "archive": _archive_json(o.archive),
                            "pruned": o.pruned,
                            "seconds": round(o.seconds, 1),
                            "detail": o.detail,
                            "notes": o.notes,
                            "remote": _remote_json(o),
                        }
                        for o in outcomes
                    ]
                }
            )
        else:
            _print_outcomes(outcomes)
        if problem := backups.verdict(outcomes):
            raise backups.BackupError(problem)


def _remote_json(o: backups.Outcome) -> dict[str, Any] | None:
    if not o.remote:
        return None
    return {
        "result": o.remote,
        "archive": _archive_json(o.remote_archive),
        "detail": o.remote_detail,
    }


def _check_json(c: backupstore.CheckResult | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "time": c.time,
        "passed": c.passed,
        "scope": c.scope,
        "seconds": c.seconds,
        "detail": c.detail,
    }


def _check_line(c: backupstore.CheckResult | None) -> str:
    if c is None:
        return "last check: none yet (the weekly check on control, or `--check`)"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(c.time))
    verdict = "[green]passed[/]" if c.passed else "[red]FAILED[/]"
    why = f": {esc(c.detail)}" if c.detail else ""
    return f"last check: {verdict} at {when} ({esc(c.scope)}, {c.seconds:.0f} s){why}"


@click.command("backups")
@click.argument("name")
@click.option(
    "--check",
    "run_check",
    is_flag=True,
    help="Check the repository and its archives' metadata now (borg check) and record it.",
)
@click.option(
    "--remote",
    is_flag=True,
    help="The archives on the off-site remote instead (read through the VM: only its key "
    "is authorized there).",
)
@json_option
@pass_ctx
def backups_cmd(ctx: Context, name: str, run_check: bool, remote: bool, as_json: bool) -> None:
    """List a municipality's archives on the control VM and its last check's result (works
    while its VM is down or destroyed).

    \b
    --check runs `borg check` now (repository and archives' metadata, with the key from the
    vault; journaled, and locked like a backup); the weekly check on control covers the
    repository only. A failed check exits 5.

    \b
    Examples:
      kallikratis backups hersonissos
      kallikratis backups hersonissos --check --json
      kallikratis backups hersonissos --remote
    """
    m = ctx.fleet.get(name)
    backups.tenants_only([m])
    if remote:
        if run_check:
            raise UsageError(
                "--check checks control's repository; the remote's operator checks theirs"
            )
        _remote_archives(ctx, m, as_json)
        return
    store = store_of(ctx)
    checked: backupstore.CheckResult | None = None
    if run_check:
        with audited(ctx, "backup-check", [m.slug]) as record:
            checked = store.check(m.slug)
            record.result(
                m.slug, "ok" if checked.passed else "failed", checked.detail[:1500], checked.seconds
            )
    archives = store.archives(m.slug)
    try:
        state = store.status(m.slug)
    except KallikratisError as exc:  # e.g. a control not deployed since the tool came
        console_err.print(f"[yellow]warning:[/] no check result from control: {esc(exc.message)}")
        state = backupstore.StoreStatus(repository=bool(archives), check=None, destroyed=None)
    last = checked or state.check
    if as_json:
        emit_json(
            {
                "slug": m.slug,
                "archives": [_archive_json(a) for a in archives],
                "last_check": _check_json(last),
                "destroyed": state.destroyed,
            }
        )
    else:
        _print_archives(m.slug, archives)
        console.print(_check_line(last))
        if state.destroyed is not None:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(state.destroyed))
            console.print(
                f"its VM was destroyed at {when}: the repository is kept for "
                f"backup_retention_after_destroy ({ctx.fleet.backup_retention_after_destroy} "
                "days) from then"
            )
    if checked is not None and not checked.passed:
        raise backups.BackupError(f"the check of {m.slug}'s repository failed: {checked.detail}")


def _remote_archives(ctx: Context, m: model.Municipality, as_json: bool) -> None:
    if m.backup_remote is None:
        raise UsageError(f"{m.slug} has no backup_remote: no off-site copy to list")
    guest = Guest(ctx.engine.target(m))
    archives = backups.remote_archives(guest)
    repository = m.backup_remote.repository(m.slug)
    if as_json:
        emit_json(
            {
                "slug": m.slug,
                "repository": repository,
                "archives": [_archive_json(a) for a in archives],
            }
        )
    else:
        _print_archives(m.slug, archives, where=f" on {repository}")


def _print_archives(slug: str, archives: list[backups.Archive], where: str = "") -> None:
    table = Table(title=f"archives of {esc(slug)}{esc(where)}", title_justify="left")
    for col in ("archive", "started", "size", "deduplicated", "files"):
        table.add_column(col)
    for a in archives:
        table.add_row(
            esc(a.name),
            esc(a.start.replace("T", " ")[:19]),
            size(a.original_size),
            size(a.deduplicated_size),
            str(a.nfiles),
        )
    console.print(table)
    if not archives:
        console.print(f"no archive yet: `kallikratis backup {esc(slug)}` makes one")


def final_backups(ctx: Context, slugs: list[str], record: RunRecord) -> dict[str, str]:
    """Before `destroy`: one last archive of every municipality among *slugs* whose VM
    exists, named in the output and the journal. BackupError (exit 5, nothing destroyed)
    when one cannot be made; no control VM: a warning (there is no store to write to).
    Returns slug -> archive name."""
    fleet = ctx.fleet
    tenants = [m for m in fleet.tenants if m.slug in slugs]
    if not tenants:
        return {}
    if fleet.control is None:
        console_err.print(
            "[yellow]warning:[/] no central VM with role control: no backup store, so no "
            "final backup is taken"
        )
        return {}
    engine = ctx.engine
    running, failed = [], []
    for m in tenants:
        dom = engine.backend(m.hypervisor).domain(m.vm_name)
        if dom is None:
            continue  # nothing left to back up, nothing to destroy
        if dom.running:
            running.append(m)
        else:
            failed.append(backups.Outcome(m.slug, detail=f"the VM is {dom.state}"))
    outcomes = failed + backups.run(running, lambda m: Guest(engine.target(m)), store_of(ctx))
    for o in outcomes:
        name = o.archive.name if o.archive else ""
        record.result(o.slug, o.result, f"final backup: {name} {o.detail}".strip()[:1500])
        if o.result in ("ok", "partial"):
            console_err.print(f"final backup of {esc(o.slug)}: {esc(name)}")  # stdout: --json
        if o.result == "partial":  # control's archive is the one kept after destroy
            console_err.print(f"[yellow]warning:[/] {esc(o.slug)}: {esc(o.detail)}")
    bad = [o for o in outcomes if o.result not in ("ok", "partial")]
    if bad:
        why = "; ".join(f"{o.slug}: {o.detail}" for o in bad)
        raise backups.BackupError(
            f"no final backup ({why}): nothing was destroyed. Start the VM (`kallikratis up "
            "NAME`) and try again, or destroy without one: --no-final-backup"
        )
    return {o.slug: o.archive.name for o in outcomes if o.archive is not None}


def record_destroyed(ctx: Context, slugs: list[str]) -> None:
    """After `destroy`: control records when each municipality's VM went, and removes its
    repository backup_retention_after_destroy days later (its daily timer). Best effort: a
    warning when control cannot be told (the repository is then kept until it is)."""
    fleet = ctx.fleet
    tenants = [m.slug for m in fleet.tenants if m.slug in slugs]
    if not tenants or fleet.control is None:
        return
    try:
        backupstore.destroyed(Guest(ctx.engine.target(fleet.control)), tenants)
    except KallikratisError as exc:
        console_err.print(
            f"[yellow]warning:[/] control did not record the destroy of {', '.join(tenants)} "
            f"(their repositories are kept until it does): {esc(exc.message)}"
        )
        return
    console_err.print(
        f"repositories of {', '.join(tenants)} kept on control for "
        f"{fleet.backup_retention_after_destroy} days (backup_retention_after_destroy)"
    )


COMMANDS = (backup_cmd, backups_cmd)

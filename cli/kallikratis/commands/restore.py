"""`kallikratis restore`: a municipality's files and databases from one of its archives."""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from kallikratis import (
    addresses,
    backups,
    backupstore,
    model,
    restore,
    restorenew,
    secrets,
    siterun,
    verify,
)
from kallikratis.commands.audit import audited
from kallikratis.commands.backup import store_of
from kallikratis.commands.common import (
    Context,
    console,
    console_err,
    emit_json,
    esc,
    json_option,
    pass_ctx,
)
from kallikratis.commands.progress import PhaseBoard
from kallikratis.commands.stack import bring_up, with_control
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.guest import Guest
from kallikratis.restoreinto import Transplant


def _verify_fn(ctx: Context, maintenance: bool = True) -> restore.VerifyFn:
    def check(members: list[model.Municipality]) -> dict[str, tuple[bool, str]]:
        engine = ctx.engine
        checks, _ = verify.run(engine.fleet, members, engine.state_dir, maintenance=maintenance)
        out = {}
        for m in members:
            mine = [c for c in checks if c.slug in (m.slug, "*")]
            bad = [c for c in mine if not c.passed]
            why = "; ".join(f"{c.name}: {c.message[:200]}" for c in bad[:3])
            out[m.slug] = (bool(mine) and not bad, why or ("no checks ran" if not mine else ""))
        return out

    return check


def _reapply_fn(ctx: Context, new: model.Municipality) -> Callable[[], None]:
    """NEWNAME's own portal set-up over the archive's database (site title, administrator,
    addresses, pages): the portal role alone, as `deploy NEWNAME --only portal` runs it."""

    def reapply() -> None:
        if "portal" not in new.modules:
            return
        run = siterun.run_site(
            ctx.fleet.inventory,
            (new,),
            state_dir=ctx.engine.state_dir,
            environment=addresses.to_env(ctx.fleet),
            only=("portal",),
        )
        host = run.hosts.get(new.slug)
        if run.not_started or host is None or host.result != "ok":
            failures = "; ".join(f"{t}: {m}" for t, m in host.failures) if host else ""
            why = run.not_started or failures or (host.result if host else "no result")
            raise KallikratisError(
                f"the portal role failed ({why}); run artifacts: {run.artifacts.parent}"
            )

    return reapply


@click.command("restore")
@click.argument("name")
@click.option("--archive", "archive_name", metavar="ARCHIVE", help="Default: the newest.")
@click.option(
    "--to-new",
    "new_name",
    metavar="NEWNAME",
    help="Restore into NEWNAME's fresh VM (declared in the inventory, not created yet).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@json_option
@pass_ctx
def restore_cmd(
    ctx: Context,
    name: str,
    archive_name: str | None,
    new_name: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Restore a municipality's files and databases from one of its archives.

    \b
    Maintenance mode on, a snapshot of the VM, files extracted and databases restored,
    verify, maintenance mode off. On any failure the VM is reverted to the snapshot (exit 5).
    Another municipality's archive is refused (exit 2).

    \b
    --to-new NEWNAME: NAME's VM is not touched; NEWNAME (an inventory entry whose VM does
    not exist yet, with NAME's modules) is brought up and deployed as `onboard` does, the
    archive streamed from control into it, WordPress' addresses set to NEWNAME's domain,
    the content checked against the archive, then verify (to inspect, or to move).

    \b
    Examples:
      kallikratis backups hersonissos
      kallikratis restore hersonissos --archive hersonissos-2026-12-01T02:00:04
      kallikratis restore hersonissos --to-new hersonissos-new --yes
    """
    backups.tenants_only([ctx.declared.get(name)])
    if archive_name is not None:
        restore.check_owner(name, archive_name)  # before anything is asked of libvirt or control
    if new_name is not None:
        restorenew.check_target(ctx.declared.get(name), ctx.declared.get(new_name), False)
    m = ctx.fleet.get(name)
    archive = restore.choose(m.slug, store_of(ctx).archives(m.slug), archive_name)
    if new_name is not None:
        _to_new(ctx, m, ctx.fleet.get(new_name), archive, yes, as_json)
        return
    _confirm(
        yes,
        f"Restore {m.slug} from {archive.name} (started {archive.start})? Its files and "
        "databases are replaced; the VM is in maintenance mode meanwhile.",
    )
    engine = ctx.engine
    store = store_of(ctx)
    with audited(ctx, "restore", [m.slug]) as record:
        _prepare_for_restore(store, m.slug)
        with PhaseBoard([m.slug], f"restore {archive.name}") as board:
            outcome = restore.restore(
                m,
                archive,
                engine.backend(m.hypervisor),
                Guest(engine.target(m)),
                _verify_fn(ctx),
                record.id,
                lambda phase: board(m.slug, phase),
            )
            board(m.slug, outcome.result)
        if outcome.result == "restored":
            _alive_after_restore(store, m.slug)
        record.result(m.slug, outcome.result, f"{archive.name} {outcome.detail}"[:1500])
        _report(outcome, as_json)
        if outcome.result != "restored":
            raise restore.RestoreError(f"restore of {m.slug} failed: {outcome.detail}")


def _confirm(yes: bool, question: str) -> None:
    if not yes:
        if not os.isatty(0):
            raise UsageError("restore needs confirmation: pass --yes when not on a terminal")
        click.confirm(question, abort=True)


def _to_new(
    ctx: Context,
    m: model.Municipality,
    new: model.Municipality,
    archive: backups.Archive,
    yes: bool,
    as_json: bool,
) -> None:
    """`restore NAME --to-new NEWNAME`: up and deploy NEWNAME, then NAME's archive into it."""
    engine = ctx.engine
    exists = engine.backend(new.hypervisor).domain(new.vm_name) is not None
    restorenew.check_target(m, new, exists)
    _confirm(
        yes,
        f"Create {new.slug} and restore {m.slug}'s {archive.name} into it? {m.slug} is not "
        "touched.",
    )
    store = store_of(ctx)
    with audited(
        ctx, "restore", [m.slug, new.slug, *(c.slug for c in with_control(ctx, new))]
    ) as record:
        bring_up(ctx, new, record, as_json)
        passphrase = secrets.read_secret(ctx.fleet, m.slug, engine.keys, "vault_backup_passphrase")
        transplant = Transplant(
            m.slug, archive.name, store.guest, Guest(engine.target(new)), passphrase
        )
        with PhaseBoard([new.slug], f"restore {archive.name}") as board:
            outcome = restorenew.to_new(
                new,
                transplant,
                _verify_fn(ctx, maintenance=False),
                _reapply_fn(ctx, new),
                lambda p: board(new.slug, p),
            )
            board(new.slug, outcome.result)
        record.result(new.slug, outcome.result, f"{archive.name} {outcome.detail}"[:1500])
        _report(outcome, as_json)
        if outcome.result != "restored":
            raise restore.RestoreError(
                f"restore of {m.slug} into {new.slug} failed: {outcome.detail}"
            )


def _report(outcome: restore.RestoreOutcome, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "slug": outcome.slug,
                "archive": outcome.archive,
                "result": outcome.result,
                "snapshot": outcome.snapshot,
                "reverted": outcome.reverted,
                "seconds": round(outcome.seconds, 1),
                "phases": {k: round(v, 1) for k, v in outcome.timings.items()},
                "detail": outcome.detail,
            }
        )
    else:
        colour = "green" if outcome.result == "restored" else "red"
        console.print(
            f"[{colour}]{esc(outcome.slug)}: {esc(outcome.result)}[/] from "
            f"{esc(outcome.archive)} in {outcome.seconds:.0f} s"
            + (f": {esc(outcome.detail)}" if outcome.detail else "")
        )


def _alive_after_restore(store: backups.Store, slug: str) -> None:
    """A restored municipality lives: its destroy record on control goes (best effort)."""
    try:
        if backupstore.alive(store.guest, slug):
            console_err.print(f"{esc(slug)}: {backupstore.UNDESTROYED_NOTE}")
    except KallikratisError as exc:
        console_err.print(f"[yellow]warning:[/] {esc(slug)}'s destroy record: {esc(exc.message)}")


def _prepare_for_restore(store: backups.Store, slug: str) -> None:
    """Under the run lock: a stale repository lock broken; best effort, the notes printed."""
    try:
        notes = store.prepare(slug).notes()
    except KallikratisError as exc:
        notes = [f"the repository's lock was not checked on control: {exc.message}"]
    for note in notes:
        console_err.print(f"[yellow]{esc(slug)}[/]: {esc(note)}")


COMMANDS = (restore_cmd,)

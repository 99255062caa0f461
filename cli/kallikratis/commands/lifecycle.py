"""VM lifecycle commands: validate, plan, up, status, ssh, console, destroy, render."""

from __future__ import annotations

import dataclasses
import os
import shutil

import click
from rich.table import Table

from kallikratis import capacity, model
from kallikratis.commands.audit import audited, record_results
from kallikratis.commands.backup import final_backups, record_destroyed
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
    report_results,
)
from kallikratis.commands.progress import PhaseBoard
from kallikratis.documents import VmKeys, compose
from kallikratis.errors import HypervisorError, InventoryError, KallikratisError, UsageError
from kallikratis.keys import KeyPair
from kallikratis.render import yaml_str
from kallikratis.selection import select, select_for_destroy


@click.command()
@click.option("--offline", is_flag=True, help="Do not contact hypervisors (skip capacity checks).")
@json_option
@pass_ctx
def validate(ctx: Context, offline: bool, as_json: bool) -> None:
    """Check the inventory; change nothing.

    Reports every problem with its file, municipality and field; exit code 2 when invalid.
    A hypervisor that cannot be reached is reported and its capacity check skipped.
    """
    skipped: dict[str, str] = {}
    try:
        fleet = ctx.declared  # no VM's address is needed here
        if not offline:
            measured = capacity.measure(fleet, ctx.engine.backend)
            skipped = measured.unreachable
            capacity.require_capacity(fleet, measured.measured)
    except InventoryError as exc:
        if as_json:
            emit_json({"valid": False, "problems": exc.problems, "capacity_skipped": skipped})
        raise
    if as_json:
        emit_json(
            {
                "valid": True,
                "fleet": fleet.name,
                "municipalities": [m.slug for m in fleet.municipalities],
                "capacity_checked": not offline and not skipped,
                "capacity_skipped": skipped,
            }
        )
        return
    for hv, why in skipped.items():
        console_err.print(f"warning: capacity check of {esc(hv)} skipped: {esc(why)}")
    console.print(
        f"inventory {esc(fleet.inventory)} is valid: fleet {esc(fleet.name)}, "
        f"{len(fleet.municipalities)} municipalities"
        + (
            ""
            if offline or not skipped
            else f" (capacity not checked on {esc(', '.join(skipped))})"
        )
    )


@click.command()
@names_arg
@json_option
@pass_ctx
def plan(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Show what `up` would do: create / change / unchanged, and orphans. Touches nothing."""
    engine = ctx.engine
    items = engine.plan(select(ctx.fleet, names, False))
    orphans = engine.orphans()
    if as_json:
        emit_json({"items": items, "orphans": orphans})
        return
    table = Table(title=f"plan for fleet {esc(ctx.fleet.name)}", title_justify="left")
    for col in ("municipality", "action", "state", "details"):
        table.add_column(col)
    for it in items:
        details = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in it.changes)
        if it.restart_pending:
            details = (details + "; " if details else "") + "restart pending"
        color = {"create": "green", "change": "yellow"}.get(it.action, "")
        action = f"[{color}]{it.action}[/]" if color else it.action
        table.add_row(esc(it.slug), action, esc(it.state), esc(details))
    for o in orphans:
        table.add_row(
            esc(o.slug),
            "[red]orphan[/]",
            esc(o.state),
            "not in the inventory; `destroy` removes it",
        )
    console.print(table)
    todo = sum(it.action != "unchanged" for it in items)
    console.print(
        f"{todo} to create or change, {len(items) - todo} unchanged, {len(orphans)} orphan(s)"
    )


@click.command()
@names_arg
@all_opt
@click.option("--restart", is_flag=True, help="Restart running VMs whose spec changed.")
@click.option("--no-wait", is_flag=True, help="Do not wait for SSH to answer.")
@click.option("--parallel", default=8, show_default=True, help="VMs brought up at once.")
@click.option("--dry-run", is_flag=True, help="Show the plan and stop (same as `plan`).")
@json_option
@click.pass_context
def up(
    cctx: click.Context,
    names: tuple[str, ...],
    all_: bool,
    restart: bool,
    no_wait: bool,
    parallel: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Create or update municipality VMs until they answer SSH with their pinned key.

    Idempotent: a second run reports every VM unchanged. Network, storage pool, golden image,
    copy-on-write disk, cloud-init seed, DHCP reservation and domain are each ensured.
    """
    ctx: Context = cctx.obj
    selection = select(ctx.fleet, names, all_, required=True)
    if dry_run:
        cctx.invoke(plan, names=tuple(m.slug for m in selection), as_json=as_json)
        return
    capacity.require_capacity(ctx.fleet, ctx.engine.capacity())
    with audited(ctx, "up", [m.slug for m in selection]) as record:
        with PhaseBoard([m.slug for m in selection], "up") as board:
            results = ctx.engine.up(
                selection, board, restart=restart, wait=not no_wait, parallel=parallel
            )
        record_results(record, results)
        report_results(results, as_json, "up")


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"


@click.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """The fleet as libvirt sees it: state, IP, domain, image, uptime, drift."""
    rows = ctx.engine.status()
    if as_json:
        emit_json({"fleet": ctx.fleet.name, "municipalities": rows})
        return
    table = Table(title=f"fleet {esc(ctx.fleet.name)}", title_justify="left")
    for col in ("municipality", "hypervisor", "state", "ip", "domain", "image", "uptime", "drift"):
        table.add_column(col)
    for r in rows:
        color = "green" if r.state == "running" else "yellow"
        table.add_row(
            esc(r.slug)
            + (f" [dim](central: {esc(', '.join(r.central_roles))})[/]" if r.central_roles else ""),
            esc(r.hypervisor),
            f"[{color}]{esc(r.state)}[/]",
            r.ip,
            esc(r.domain),
            esc(r.image),
            _uptime(r.uptime_s),
            esc("; ".join(r.drift)) or "none",
        )
    console.print(table)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def ssh(ctx: Context, name: str, command: tuple[str, ...]) -> None:
    """Log in to a municipality's VM (host key pinned), or run COMMAND there.

    Example: kallikratis ssh hersonissos -- hostname
    """
    m = ctx.fleet.get(name)
    target = ctx.engine.target(m)
    if not target.identity.exists():
        raise UsageError(f"no automation key at {target.identity}: run `kallikratis up` first")
    argv = target.argv(list(command) or None, tty=not command and os.isatty(0))
    os.execvp(argv[0], argv)


@click.command()
@click.argument("name")
@pass_ctx
def console_cmd(ctx: Context, name: str) -> None:
    """Attach to a VM's serial console (leave with Ctrl+])."""
    m = ctx.fleet.get(name)
    uri = ctx.fleet.hypervisor_of(m).uri
    if not shutil.which("virsh"):
        raise KallikratisError("virsh is not installed")
    os.execvp("virsh", ["virsh", "-c", uri, "console", m.vm_name])


console_cmd.name = "console"


@click.command()
@names_arg
@all_opt
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--no-final-backup", is_flag=True, help="Skip the final backup (asked for twice).")
@json_option
@pass_ctx
def destroy(
    ctx: Context,
    names: tuple[str, ...],
    all_: bool,
    yes: bool,
    no_final_backup: bool,
    as_json: bool,
) -> None:
    """Remove VMs: domain, disk, seed and DHCP reservation. Never the golden image.

    A municipality's VM is first backed up one last time into its repository on control
    (the archive is named; its repository is kept); when that fails, nothing is destroyed
    (exit 5). --no-final-backup skips it. NAMES may include orphans (VMs of this fleet no
    longer in the inventory). Only domains carrying Kallikratis metadata are ever touched.
    """
    engine = ctx.engine
    slugs = select_for_destroy(ctx.fleet, names, all_, lambda: [o.slug for o in engine.orphans()])
    if not yes:
        if not os.isatty(0):
            raise UsageError("destroy needs confirmation: pass --yes when not on a terminal")
        click.confirm(
            f"Destroy {len(slugs)} VM(s) and their disks: {', '.join(slugs)}?", abort=True
        )
        _confirm_central(ctx.fleet, slugs)
        if no_final_backup:
            _confirm_no_backup(ctx.fleet, slugs)
    with audited(ctx, "destroy", slugs) as record:
        archives = {} if no_final_backup else final_backups(ctx, slugs, record)
        with PhaseBoard(slugs, "destroy") as board:
            results = engine.destroy(slugs, board)
        results = [  # the journal and the report name each final archive
            dataclasses.replace(r, detail=f"final backup {archives[r.slug]}; {r.detail}".strip())
            if r.slug in archives
            else r
            for r in results
        ]
        record_results(record, results)
        record_destroyed(ctx, [r.slug for r in results if r.result == "destroyed"])
        report_results(results, as_json, "destroy")


def _confirm_no_backup(fleet: model.Fleet, slugs: list[str]) -> None:
    """--no-final-backup: the second question, answered by typing the names."""
    tenants = [m.slug for m in fleet.tenants if m.slug in slugs]
    if not tenants:
        return
    console_err.print(
        f"[bold red]No final backup[/] of {', '.join(tenants)}: whatever changed since the "
        "last backup is lost with the VM."
    )
    typed = click.prompt("Type the name(s) again to destroy without a backup", default="")
    if sorted(typed.replace(",", " ").split()) != sorted(tenants):
        raise click.Abort()


def _confirm_central(fleet: model.Fleet, slugs: list[str]) -> None:
    """The center's own VMs (monitoring, the scorecard, later the backups) are asked for twice:
    the second time by typing their names."""
    central = [m.slug for m in fleet.central if m.slug in slugs]
    if not central:
        return
    what = "is a central VM" if len(central) == 1 else "are central VMs"
    console_err.print(
        f"[bold red]{', '.join(central)}[/] {what} of the whole fleet"
        " (monitoring, alerts, scorecard): its data goes with it."
    )
    typed = click.prompt("Type the name(s) again to destroy them", default="", show_default=False)
    if sorted(typed.replace(",", " ").split()) != sorted(central):
        raise click.Abort()


@click.command()
@click.argument("name")
@click.option(
    "--what",
    type=click.Choice(["domain", "user-data", "meta-data", "network-config"]),
    default="domain",
    show_default=True,
)
@pass_ctx
def render_cmd(ctx: Context, name: str, what: str) -> None:
    """Print the exact document `up` writes for NAME (private keys redacted).

    Needs no hypervisor: when it cannot be reached, the document is rendered from the
    inventory alone and stderr says which value would have come from it.
    """
    m = ctx.fleet.get(name)
    engine = ctx.engine
    pair = engine.keys.host_key(m.slug, create=False)
    if pair is None:
        pair = KeyPair("", "(host key generated at first `up`)")
    dom = None
    try:
        backend = engine.backend(m.hypervisor)
    except HypervisorError as exc:  # cannot connect: render from the inventory alone
        _say_rendered_offline(ctx, m, exc, what, engine.recipe().version)
    else:
        dom = backend.domain(m.vm_name)
    image = dom.image if dom else engine.recipe().version
    doc = compose(ctx.fleet, m, VmKeys(pair, engine.keys.ensure_client_key()), image).text(what)
    if pair.private_openssh:
        doc = doc.replace(yaml_str(pair.private_openssh), '"<redacted: host private key>"')
    click.echo(doc, nl=False)


def _say_rendered_offline(
    ctx: Context, m: model.Municipality, exc: HypervisorError, what: str, recipe_version: str
) -> None:
    uri = ctx.fleet.hypervisors[m.hypervisor].uri
    why = exc.message if uri in exc.message else f"{uri}: {exc.message}"
    console_err.print(
        f"note: hypervisor {esc(m.hypervisor)} unreachable ({esc(why)}); rendered from the "
        "inventory alone"
    )
    if what == "domain":
        console_err.print(
            f"note: from the hypervisor would come the image version in <kk:image> "
            f"(an existing VM keeps the image it was created from); used here: the "
            f"recipe's current version {esc(recipe_version)}"
        )
    if "ip" in m.vars:
        console_err.print(f"note: the address {m.ip} is the inventory's explicit ip")
    else:
        console_err.print(
            f"note: from the hypervisor would come the VM's address (an existing VM keeps "
            f"the one it has); used here: the deterministic default {m.ip}, right for a VM "
            "not created yet"
        )


render_cmd.name = "render"
COMMANDS = (validate, plan, up, status, ssh, console_cmd, destroy, render_cmd)

"""`keys rotate`: the automation SSH key, replaced on every selected VM."""

from __future__ import annotations

import click

from kallikratis import rotation
from kallikratis.commands.audit import audited, record_results
from kallikratis.commands.common import (
    Context,
    all_opt,
    emit_json,
    json_option,
    names_arg,
    pass_ctx,
    report_results,
)
from kallikratis.provision import UpResult
from kallikratis.selection import select


@click.group()
def keys() -> None:
    """Key custody: the automation SSH key Kallikratis logs in to the VMs with."""


@keys.command()
@names_arg
@all_opt
@click.option(
    "--dry-run", is_flag=True, help="Say which VMs would get the new key; change nothing."
)
@json_option
@pass_ctx
def rotate(ctx: Context, names: tuple[str, ...], all_: bool, dry_run: bool, as_json: bool) -> None:
    """Replace the automation SSH key on the selected VMs (NAMES, or --all).

    \b
    For each VM, over SSH with its pinned host key:
      1. the new public key is added to the admin user's authorized_keys (logging in with
         the current key), and a login with the new key is checked;
      2. the old key is removed (logging in with the new one), then checked again: the new
         key logs in, the old one no longer does.
    A VM that cannot be reached keeps the old key: it is reported, the exit code is 5, and
    the old private key stays in the state directory (ssh/id_ed25519.old, offered by every
    SSH path after the new one) until a later `keys rotate` has moved every VM. Running it
    again finishes a pending rotation instead of making yet another key.

    \b
    New VMs' cloud-init seeds carry the new key; a VM whose first boot is confirmed keeps a
    seed without the automation key, so rotating makes no VM drift in `plan` or `up`.

    \b
    Examples:
      kallikratis keys rotate --all --dry-run
      kallikratis keys rotate --all
      kallikratis keys rotate hersonissos     # finish a rotation for one VM
    """
    engine = ctx.engine
    selection = select(ctx.fleet, names, all_, required=True)
    live = {
        d.slug for hv in ctx.fleet.hypervisors for d in engine.backend(hv).domains(ctx.fleet.name)
    }
    targets = {m.slug: engine.target(m) if m.slug in live else None for m in selection}
    fleet_vms = sorted(live & {m.slug for m in ctx.fleet.municipalities})
    if dry_run:
        out = rotation.rotate(engine.keys, ctx.fleet.name, targets, fleet_vms, dry_run=True)
        if as_json:
            emit_json({"results": out})
        for r in [] if as_json else out:
            click.echo(f"{r.slug}: {r.result}")
        return
    with audited(ctx, "keys rotate", [m.slug for m in selection]) as record:
        out = rotation.rotate(engine.keys, ctx.fleet.name, targets, fleet_vms)
        results = [UpResult(r.slug, r.result, r.detail, r.seconds) for r in out]
        record_results(record, results)
        report_results(results, as_json, "keys rotate")


COMMANDS = (keys,)

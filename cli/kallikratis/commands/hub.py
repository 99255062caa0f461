"""`kallikratis hub ...`: the regional interoperability hub (a central VM, central_roles [hub])."""

from __future__ import annotations

import click
from rich.table import Table

from kallikratis import hubharvest
from kallikratis.commands.common import Context, console, emit_json, esc, json_option, pass_ctx
from kallikratis.errors import UsageError


@click.group("hub")
def hub_group() -> None:
    """The regional interoperability hub: news, consultations and open data of every portal."""


@hub_group.command("harvest")
@json_option
@pass_ctx
def harvest_cmd(ctx: Context, as_json: bool) -> None:
    """Run the hub's harvester now and show, per municipality, what was new, changed or
    removed, and which portals did not answer (stale: the hub keeps their last harvest).

    Exit 5 when a municipality is stale, 1 when the harvest could not run.

    \b
    Example:
      kallikratis -i inventories/crete hub harvest --json
    """
    hub = ctx.fleet.hub
    if hub is None:
        raise UsageError("hub harvest needs a central VM with role hub in the inventory")
    rep = hubharvest.harvest(ctx.engine.target(hub))
    if as_json:
        emit_json(rep)
    else:
        table = Table(title=f"hub harvest {esc(rep.finished)}")
        for col in ("municipality", "new", "changed", "removed", "state"):
            table.add_column(col)
        for o in rep.municipalities:
            state = f"[red]stale[/] {esc(o.error or '')}" if o.stale else "[green]ok[/]"
            table.add_row(esc(o.slug), str(o.new), str(o.changed), str(o.removed), state)
        console.print(table)
    if rep.stale:
        raise hubharvest.StaleMunicipalities(
            f"{len(rep.stale)} stale (the portal did not answer): {', '.join(rep.stale)}"
        )


COMMANDS = (hub_group,)

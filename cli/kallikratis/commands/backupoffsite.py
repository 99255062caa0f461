"""`kallikratis backup remote-keys`: what the off-site remote's operator installs."""

from __future__ import annotations

from kallikratis import backupremote
from kallikratis.commands.common import Context, console, console_err, emit_json, esc
from kallikratis.errors import UsageError

#: `kallikratis backup remote-keys`: not a municipality (unless one is named so)
REMOTE_KEYS = "remote-keys"


def is_municipality(ctx: Context) -> bool:
    """True when the fleet has a municipality named like the subcommand (it wins)."""
    return REMOTE_KEYS in {m.slug for m in ctx.fleet.municipalities}


def print_remote_keys(ctx: Context, as_json: bool) -> None:
    """Per municipality with a backup_remote: its repository and the authorized_keys line of
    its VM's backup PUBLIC key (no secret is read)."""
    tenants = list(ctx.fleet.tenants)
    found = backupremote.remote_keys(
        tenants, backupremote.public_keys(tenants, ctx.engine.keys.paths)
    )
    if not found:
        raise UsageError("no municipality has a backup_remote: nothing to authorize off-site")
    if as_json:
        rows = [
            {
                "slug": k.slug,
                "repository": k.repository,
                "authorized_keys": k.authorized_keys or None,
            }
            for k in found
        ]
        emit_json({"municipalities": rows})
    else:
        for k in found:
            if k.authorized_keys:
                console.print(f"# {esc(k.slug)}: {esc(k.repository)}", soft_wrap=True)
                console.print(esc(k.authorized_keys), soft_wrap=True)
    missing = [k.slug for k in found if not k.authorized_keys]
    if missing:
        console_err.print(
            f"[yellow]warning:[/] no backup key yet for {esc(', '.join(missing))}: "
            "`kallikratis deploy NAME` makes it, then run this again"
        )

"""Application stack commands: deploy, verify, onboard."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from kallikratis import addresses, ansible, model, siterun, verify
from kallikratis.capacity import require_capacity
from kallikratis.commands.audit import audited, record_playbook, record_results
from kallikratis.commands.common import (
    Context,
    all_opt,
    console,
    console_err,
    emit_json,
    esc,
    json_option,
    names_arg,
    report_results,
)
from kallikratis.commands.progress import PhaseBoard
from kallikratis.errors import ProvisionError
from kallikratis.journal import Journal, RunRecord
from kallikratis.selection import select
from kallikratis.stack import prepare_stack


def raise_if_not_started(run: ansible.PlaybookRun) -> None:
    """A playbook that started on no host fails with ansible's own reason, not a table row."""
    if run.not_started:
        raise ProvisionError(
            f"ansible did not start: {run.not_started}\n  run artifacts: {run.artifacts.parent}"
        )


def _only_roles(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """--only's values (repeated or comma-separated), each a role of site.yml."""
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    known = siterun.site_roles()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)} is not a role of playbooks/site.yml "
            f"(its roles: {', '.join(known)})"
        )
    return tuple(dict.fromkeys(names))


def run_deploy(
    ctx: Context,
    selection: tuple[model.Municipality, ...],
    check: bool,
    as_json: bool,
    only: tuple[str, ...] = (),
    to: Console | None = None,
) -> ansible.PlaybookRun:
    """site.yml on *selection*; its JSON, or its table on *to* (default: standard output)."""
    engine = ctx.engine
    prepare_stack(ctx.fleet, engine.keys, engine.state_dir, selection)
    what = "deploy" + (" --check" if check else "") + (f" --only {','.join(only)}" if only else "")
    with PhaseBoard([m.slug for m in selection], what) as b:
        run = siterun.run_site(
            ctx.fleet.inventory,
            selection,
            state_dir=engine.state_dir,
            check=check,
            progress=b,
            environment=addresses.to_env(ctx.fleet),
            only=only,
        )
    if as_json:
        emit_json(
            {
                "playbook": run.playbook,
                "seconds": run.seconds,
                "strategy": run.strategy,
                "artifacts": str(run.artifacts),
                "check": check,
                "only": list(only),
                "hosts": run.hosts,
            }
        )
    else:
        out = to or console
        table = Table(title=f"{what} ({run.strategy}, {run.seconds:.0f} s)", title_justify="left")
        for col in ("municipality", "result", "ok", "changed", "failed", "unreachable"):
            table.add_column(col)
        for slug, h in run.hosts.items():
            color = "green" if h.result == "ok" else "red"
            table.add_row(
                esc(slug),
                f"[{color}]{h.result}[/]",
                str(h.ok),
                str(h.changed),
                str(h.failed),
                str(h.unreachable),
            )
        out.print(table)
        for slug, h in run.hosts.items():
            for task, msg in h.failures:
                out.print(f"[red]{esc(slug)}[/]: task [bold]{esc(task)}[/]: {esc(msg)}")
        out.print(f"run artifacts: {esc(run.artifacts)}")
    return run


@click.command()
@names_arg
@all_opt
@click.option("--check", is_flag=True, help="Check mode with diff: report, change nothing.")
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="ROLE[,ROLE]",
    callback=_only_roles,
    help="Apply only these roles of site.yml (repeatable), e.g. `--only backup` after a change "
    "to backup_remote. The rest of the stack is left as it is.",
)
@json_option
@click.pass_obj
def deploy(
    ctx: Context,
    names: tuple[str, ...],
    all_: bool,
    check: bool,
    only: tuple[str, ...],
    as_json: bool,
) -> None:
    """Deploy the application stack (playbooks/site.yml) to municipality VMs.

    One municipality failing does not stop the others; exit code 5 when any failed or was
    unreachable. Run artifacts are kept under the state directory.

    With --only, a partial deploy: only the named roles run (every role of site.yml is tagged
    with its own name), in a fraction of a whole deploy's time. A deploy without --only is
    still what brings a VM entirely in line with the inventory.

    \b
    Examples:
      kallikratis deploy --all
      kallikratis deploy hersonissos --check
      kallikratis deploy --all --only backup
    """
    selection = select(ctx.fleet, names, all_, required=True)
    with audited(ctx, "deploy", [m.slug for m in selection], changes=not check) as record:
        run = run_deploy(ctx, selection, check, as_json, only)
        step = f"deploy --only {','.join(only)}" if only else "deploy"
        record_playbook(record, run, step)
        raise_if_not_started(run)
        bad = [s for s, h in run.hosts.items() if h.result != "ok"]
        if bad:
            raise ProvisionError(f"deploy failed on: {', '.join(bad)}")


def run_verify(
    ctx: Context,
    selection: tuple[model.Municipality, ...],
    as_json: bool,
    record: RunRecord | None = None,
) -> bool:
    with PhaseBoard([m.slug for m in selection], "verify") as board:  # stderr, never stdout
        checks, took = verify.run(ctx.fleet, list(selection), ctx.engine.state_dir, progress=board)
    if record is not None:  # the journal: `report` shows each municipality's last verify
        for m in selection:
            mine = [c for c in checks if c.slug == m.slug]
            passed = sum(c.passed for c in mine)
            result = "passed" if mine and passed == len(mine) else "failed"
            record.result(m.slug, result, f"{passed}/{len(mine)} checks passed", round(took, 1))
    if as_json:
        emit_json({"seconds": took, "checks": checks})
    else:
        table = Table(title=f"verify ({took:.0f} s)", title_justify="left")
        for col in ("municipality", "passed", "failed", "failing checks"):
            table.add_column(col)
        for slug in [m.slug for m in selection] + (
            ["*"] if any(c.slug == "*" for c in checks) else []
        ):
            mine = [c for c in checks if c.slug == slug]
            bad = [c for c in mine if not c.passed]
            table.add_row(
                esc(slug),
                str(len(mine) - len(bad)),
                str(len(bad)),
                esc("\n".join(f"{c.name}: {c.message[:160]}" for c in bad)),
            )
        console.print(table)
    return bool(checks) and all(c.passed for c in checks)


@click.command("verify")
@names_arg
@json_option
@click.pass_obj
def verify_cmd(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Check the running platform with the testinfra suites in kallikratis/checks.

    Services, ports and firewall, TLS chain and names, home page, WordPress REST API,
    Datasette JSON API, Kolibri where enabled and absent where not. Exit 5 on any failure.
    Each run is journaled (`history`), with passed/failed per municipality.
    """
    selection = select(ctx.fleet, names, False)
    journal = Journal(ctx.engine.state_dir)
    slugs = [m.slug for m in selection]
    with journal.run("verify", list(sys.argv), ctx.declared.inventory, slugs) as record:
        if not run_verify(ctx, selection, as_json, record):
            raise ProvisionError("verification failed")


@click.command()
@click.argument("name")
@click.pass_obj
def onboard(ctx: Context, name: str) -> None:
    """Bring a new municipality online: validate, up, deploy, verify.

    A municipality is deployed together with the control VM (side by side), so that control
    knows it from the start: its backup key may append to its repository, its targets are
    scraped. A central VM is onboarded alone.
    """
    m = ctx.fleet.get(name)
    require_capacity(ctx.fleet, ctx.engine.capacity())
    with audited(ctx, "onboard", [m.slug, *(c.slug for c in with_control(ctx, m))]) as record:
        bring_up(ctx, m, record)
        verified = run_verify(ctx, (m,), False)
        record.result(m.slug, "online" if verified else "failed", "verify")
        if not verified:
            raise ProvisionError(f"{m.slug} is deployed but verification failed")
    console.print(f"[green]{esc(m.slug)} is online[/]: https://{esc(m.domain)}/")


def with_control(ctx: Context, m: model.Municipality) -> tuple[model.Municipality, ...]:
    """The control VM deployed side by side with a municipality (none for a central VM)."""
    control = ctx.fleet.control
    return (control,) if control is not None and not m.is_central else ()


def bring_up(ctx: Context, m: model.Municipality, record: RunRecord, as_json: bool = False) -> None:
    """`onboard`'s up and deploy (with control side by side), under the caller's lock and
    journal record (also `restore --to-new`'s). *as_json*: the caller prints JSON, so the
    up and deploy tables go to standard error."""
    to = console_err if as_json else console
    central = with_control(ctx, m)
    with PhaseBoard([m.slug], "up") as board:
        results = ctx.engine.up([m], board)
    record_results(record, results, "up")
    report_results(results, False, "up", to)
    run = run_deploy(ctx, (m, *central), False, False, to=to)
    record_playbook(record, run)
    raise_if_not_started(run)
    failed = [s for s in (m.slug, *(c.slug for c in central)) if run.hosts[s].result != "ok"]
    if failed:
        raise ProvisionError(f"deploy failed on {', '.join(failed)}")


COMMANDS = (deploy, verify_cmd, onboard)

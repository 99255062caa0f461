"""The fleet scorecard: `kallikratis report`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from kallikratis import report as scorecard
from kallikratis.commands.common import (
    Context,
    console,
    console_err,
    emit_json,
    esc,
    names_arg,
    pass_ctx,
)
from kallikratis.errors import UsageError
from kallikratis.journal import Journal
from kallikratis.reportrow import GREEN, RED, USE, Row

COLOURS = {GREEN: "green", RED: "red", scorecard.UNKNOWN: "dim"}
CSV_FIGURES = (
    "availability_30d",
    "tls_days",
    "security_updates_pending",
    "updates_pending",
    "security_updates_pending_days",
    "reboot_required_days",
    "maintenance_days",
    "disk_used",
    "image",
    "last_patch",
    "last_patch_result",
    "last_verify",
    "last_verify_result",
)


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _csv(rep: scorecard.Report) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(
        ["slug", "display_name", "overall", "state", "red_checks", "unknown_checks", "flags"]
        + list(CSV_FIGURES)
        + ["versions"]
        + list(USE)
    )
    for r in rep.rows:
        out.writerow(
            [r.slug, r.display_name, r.overall, r.state]
            + [" ".join(c.name for c in r.checks if c.state == s) for s in (RED, "unknown")]
            + [" ".join(r.flags)]
            + [_blank(r.figures[f]) for f in CSV_FIGURES]
            + [" ".join(f"{c}={v}" for c, v in r.figures["versions"].items())]
            + [_blank(r.use[u]) for u in USE]
        )


def _cell(row: Row, name: str, text: str) -> str:
    state = row.check(name).state
    return f"[{COLOURS[state]}]{esc(text) if state != 'unknown' else 'unknown'}[/]"


def _title(rep: scorecard.Report) -> str:
    s = rep.summary
    flags = ", ".join(f"{n} {flag}" for flag, n in s.flagged.items())
    return (
        f"fleet {esc(rep.fleet)}: {s.compliance_pct:.1f} % compliant "
        f"({s.green} green, {s.red} red, {s.unknown} unknown of {s.total})"
        + (f"; flagged: {esc(flags)}" if flags else "")
    )


def _table(rep: scorecard.Report) -> None:
    table = Table(title=_title(rep), title_justify="left")
    for col in ("municipality", "overall", "state", "avail. 30d", "tls days", "pending (sec.)",
                "image", "stack", "last patch", "red checks", "flags"):  # fmt: skip
        table.add_column(col)
    for r in rep.rows:
        f = r.figures
        avail = f["availability_30d"]
        table.add_row(
            esc(r.slug),
            f"[{COLOURS[r.overall]}]{r.overall}[/]",
            _cell(r, "state", r.state),
            _cell(r, "availability", f"{avail:.2%}" if avail is not None else "?"),
            _cell(r, "tls", f"{f['tls_days']:.0f}" if f["tls_days"] is not None else "?"),
            _cell(r, "security", f"{f['updates_pending']:g} ({f['security_updates_pending']:g})")
            if f["updates_pending"] is not None and f["security_updates_pending"] is not None
            else _cell(r, "security", "?"),
            _cell(r, "image", (f["image"] or "?")[:12]),
            _cell(r, "stack", " ".join(f"{c} {v}" for c, v in f["versions"].items()) or "?"),
            _cell(r, "patch", f["last_patch_result"] or "never"),
            esc(", ".join(c.name for c in r.checks if c.state == RED)),
            esc(" ".join(r.flags)),
        )
    console.print(table)


@click.command("report")
@names_arg
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV line per municipality on stdout.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the self-contained HTML page (table + charts) to FILE.",
)
@click.option("--publish", is_flag=True, help="Upload the HTML page to the control VM.")
@click.option(
    "--prometheus",
    "url",
    metavar="URL",
    envvar=scorecard.PROMETHEUS_URL_ENV,
    show_envvar=True,
    help="Prometheus to read (default: http://<control ip>:9090).",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per Prometheus query.")
@pass_ctx
def report_cmd(
    ctx: Context,
    names: tuple[str, ...],
    as_json: bool,
    as_csv: bool,
    html_file: Path | None,
    publish: bool,
    url: str | None,
    timeout: float,
) -> None:
    """The fleet scorecard: one row per municipality, a compliance summary on top.

    \b
    Columns: VM state and drift (libvirt), availability over 30 days, TLS days left, pending
    (security) updates, reboot required, maintenance mode, disk, image and stack versions vs
    the fleet's current ones (Prometheus on the control VM), last patch and verify (journal),
    and the use of the platform (requests, posts, consultations, datasets, learners).
    A municipality is green when every check is green; compliance % = green / all.
    Flags mark those that lag: no-news-90d, no-consultation, outdated-image.
    Prometheus unreachable: its columns read "unknown" and stderr says why.
    Exit 0 when nothing read is red, 5 when some municipality has a red check.

    \b
    Examples:
      kallikratis report
      kallikratis report hersonissos --json
      kallikratis report --html scorecard.html
      kallikratis report --publish      # https://control.<fleet_domain>/
    """
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    fleet = ctx.fleet
    tenants = fleet.tenants
    unknown = [n for n in names if n not in {m.slug for m in tenants}]
    if unknown:
        known = ", ".join(m.slug for m in tenants)
        raise UsageError(f"unknown municipality: {', '.join(unknown)} (known: {known})")
    selection = tuple(m for m in tenants if not names or m.slug in names)
    engine = ctx.engine
    rep = scorecard.collect(
        engine, Journal(engine.state_dir), selection, scorecard.prometheus_url(fleet, url),
        timeout=timeout,
    )  # fmt: skip
    for warning in rep.warnings:
        console_err.print(f"warning: {esc(warning)}")
    if html_file or publish:
        _page(ctx, rep, html_file, publish)
    if as_json:
        emit_json(scorecard.as_dict(rep))
    elif as_csv:
        _csv(rep)
    elif html_file or publish:  # the page has the table: one line here (and in the timer's log)
        console.print(_title(rep))
    else:
        _table(rep)
    if rep.failing:
        raise scorecard.NotCompliant(
            f"{len(rep.failing)} municipalit{'y' if len(rep.failing) == 1 else 'ies'} with a "
            f"red check: {', '.join(rep.failing)}"
        )


def _page(ctx: Context, rep: scorecard.Report, html_file: Path | None, publish: bool) -> None:
    from kallikratis import reporthtml, reportpublish  # matplotlib: only when a page is made

    html = reporthtml.page(rep)
    if html_file:
        try:
            html_file.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {html_file}: {exc.strerror}") from exc
        console_err.print(f"wrote {esc(html_file)}")
    if publish:
        control = ctx.fleet.control
        if control is None:
            raise UsageError("--publish needs a central VM with role control in the inventory")
        reportpublish.publish(ctx.engine.target(control), html)
        console_err.print(f"published https://{esc(control.domain)}/")


COMMANDS = (report_cmd,)

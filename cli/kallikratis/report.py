"""The fleet scorecard: one row per municipality from libvirt, the journal and Prometheus.

Every row holds a list of checks, each ``green``, ``red`` or ``unknown`` (its source could not
be read). A municipality is **green** when every one of these checks is green:

- ``state``: its VM is running (libvirt);
- ``drift``: its VM matches the inventory (the spec hash, as `plan`/`status` compute it);
- ``node``: Prometheus scrapes its node exporter (``up == 1``);
- ``portal``: every blackbox probe of it succeeds now (``probe_success == 1``);
- ``availability``: the site probe succeeded at least :data:`AVAILABILITY_TARGET` of 30 days;
- ``tls``: its certificate has at least :data:`TLS_MIN_DAYS` days left;
- ``security``: no security update has been pending for more than :data:`PENDING_MAX_DAYS`;
- ``reboot``: no reboot has been required for more than :data:`PENDING_MAX_DAYS`;
- ``maintenance``: not in maintenance mode for more than :data:`MAINTENANCE_MAX_HOURS` h;
- ``disk``: ``/`` is used below :data:`DISK_MAX_USED`;
- ``image``: created from the current golden image (the recipe's version);
- ``stack``: every application at the newest version seen across the fleet;
- ``patch``: its last patch run (journal) did not fail; never patched counts as green;
- ``verify``: its last verify (journal) did not fail; never verified counts as green.

The thresholds are those of the alert rules. Compliance % = green municipalities / all of
them: a municipality with an unknown check is not green, but only a red check makes the
report fail (exit 5). Flags (lagging in the use of the platform) never fail it:
``no-news-90d`` (portal on, no post published for 90 days), ``no-consultation`` (portal on,
never a consultation), ``outdated-image``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kallikratis import model
from kallikratis.errors import HypervisorError, ImageError, KallikratisError
from kallikratis.journal import Journal, RunEntry
from kallikratis.prometheus_api import Prometheus, PrometheusError
from kallikratis.provision import Engine, StatusRow
from kallikratis.reportmetrics import QUERIES, Metrics, fetch
from kallikratis.reportrow import (  # noqa: F401  (the thresholds the docstring names)
    AVAILABILITY_TARGET,
    DISK_MAX_USED,
    GREEN,
    MAINTENANCE_MAX_HOURS,
    PENDING_MAX_DAYS,
    RED,
    TLS_MIN_DAYS,
    UNKNOWN,
    Row,
    build_row,
    newest_versions,
)


class NotCompliant(KallikratisError):
    """Some municipality has a red check (exit 5, as `verify` when a check fails)."""

    exit_code = 5


@dataclass(frozen=True)
class Summary:
    total: int
    green: int
    red: int
    unknown: int
    compliance_pct: float
    flagged: dict[str, int]
    prometheus: str  # "ok" | "unreachable: ..." | "not configured"


@dataclass(frozen=True)
class Report:
    fleet: str
    generated: float
    current_image: str
    current_stack: dict[str, str]
    summary: Summary
    rows: tuple[Row, ...]
    warnings: tuple[str, ...] = ()
    metrics: Metrics = field(default_factory=Metrics, repr=False)

    @property
    def failing(self) -> list[str]:
        return [r.slug for r in self.rows if r.overall == RED]


def latest_results(runs: Sequence[RunEntry], commands: Sequence[str]) -> dict[str, tuple[str, str]]:
    """slug -> (ended or started, result) of the newest run of *commands* that reported it."""
    out: dict[str, tuple[str, str]] = {}
    for run in runs:  # newest first
        if run.command not in commands:
            continue
        for r in run.results:
            if r.slug not in out and r.result not in ("pending",):
                out[r.slug] = (run.ended or run.started, r.result)
    return out


def build(
    fleet: str,
    statuses: Sequence[StatusRow],
    runs: Sequence[RunEntry] | None,
    metrics: Metrics,
    *,
    current_image: str,
    now: float,
    prometheus: str,
    warnings: Sequence[str] = (),
) -> Report:
    """The report of the municipalities in *statuses* (tenants only, in inventory order);
    *runs* None: the journal could not be read."""
    patches = latest_results(runs or (), ("patch",))
    verifies = latest_results(runs or (), ("verify", "onboard"))
    stack = newest_versions(metrics)
    prom_now = metrics.value("now", "") or metrics.now or now
    rows = tuple(
        build_row(
            s,
            metrics,
            patch=patches.get(s.slug),
            verify=verifies.get(s.slug),
            current_image=current_image,
            current_stack=stack,
            now=prom_now,
            journal=runs is not None,
        )
        for s in statuses
    )
    return Report(
        fleet=fleet,
        generated=now,
        current_image=current_image,
        current_stack=stack,
        summary=summarise(rows, prometheus),
        rows=rows,
        warnings=tuple(warnings),
        metrics=metrics,
    )


def summarise(rows: Sequence[Row], prometheus: str) -> Summary:
    counts = {GREEN: 0, RED: 0, UNKNOWN: 0}
    flagged: dict[str, int] = {}
    for r in rows:
        counts[r.overall] += 1
        for flag in r.flags:
            flagged[flag] = flagged.get(flag, 0) + 1
    total = len(rows)
    pct = round(100.0 * counts[GREEN] / total, 1) if total else 100.0
    return Summary(total, counts[GREEN], counts[RED], counts[UNKNOWN], pct, flagged, prometheus)


def as_dict(report: Report) -> dict[str, Any]:
    """The JSON document of ``report --json``."""
    s = report.summary
    return {
        "fleet": report.fleet,
        "generated": report.generated,
        "current_image": report.current_image,
        "current_stack": report.current_stack,
        "summary": {
            "municipalities": s.total,
            "green": s.green,
            "red": s.red,
            "unknown": s.unknown,
            "compliance_pct": s.compliance_pct,
            "flagged": s.flagged,
            "prometheus": s.prometheus,
        },
        "warnings": list(report.warnings),
        "municipalities": [r.as_dict() for r in report.rows],
    }


# -- gathering -----------------------------------------------------------------------------------
PROMETHEUS_URL_ENV = "KALLIKRATIS_PROMETHEUS_URL"
PROMETHEUS_PORT = 9090
#: how far back the journal is read for the last patch and verify of each municipality
JOURNAL_RUNS = 2000


def prometheus_url(fleet: model.Fleet, override: str | None = None) -> str | None:
    """--prometheus, else $KALLIKRATIS_PROMETHEUS_URL, else the control VM's port 9090."""
    if override:
        return override
    if os.environ.get(PROMETHEUS_URL_ENV):
        return os.environ[PROMETHEUS_URL_ENV]
    control = fleet.control
    return f"http://{control.ip}:{PROMETHEUS_PORT}" if control else None


def _unknown_status(m: model.Municipality) -> StatusRow:
    return StatusRow(
        m.slug,
        m.display_name,
        m.hypervisor,
        "unknown",
        str(m.ip),
        m.domain,
        m.modules,
        "",
        None,
        (),
    )


def collect(
    engine: Engine,
    journal: Journal,
    selection: Sequence[model.Municipality],
    url: str | None,
    *,
    now: float | None = None,
    timeout: float = 10.0,
) -> Report:
    """Read libvirt, the journal and Prometheus (*url*; None: there is none) into a Report.

    A source that cannot be read becomes a warning and its columns ``unknown``.
    """
    now = time.time() if now is None else now
    warnings: list[str] = []
    try:
        live = {r.slug: r for r in engine.status()}
        statuses = [live.get(m.slug) or _unknown_status(m) for m in selection]
    except HypervisorError as exc:
        warnings.append(f"libvirt: {exc.message}; VM state unknown")
        statuses = [_unknown_status(m) for m in selection]
    runs: list[RunEntry] | None = None
    try:
        runs = journal.runs(limit=JOURNAL_RUNS)
    except KallikratisError as exc:
        warnings.append(f"journal: {exc.message}; last patch and verify unknown")
    try:
        current_image = engine.recipe().version
    except ImageError as exc:
        warnings.append(f"image recipe: {exc.message}; image check unknown")
        current_image = ""
    metrics = Metrics(now=now)
    if url is None:
        state = "not configured"
        warnings.append("no control VM in the inventory and no --prometheus: metrics unknown")
    else:
        try:
            metrics = fetch(Prometheus(url, timeout=timeout), now)
            state = f"partial: {len(metrics.failed)} queries failed" if metrics.failed else "ok"
        except PrometheusError as exc:
            state = f"unreachable: {exc.message}"
            warnings.append(f"Prometheus {exc.message}; its columns are unknown")
        for name, why in metrics.failed.items():
            warnings.append(f"Prometheus query {name}: {why}")
    if not metrics.instant:
        metrics.failed.update(dict.fromkeys(QUERIES, state))
    return build(
        engine.fleet.name,
        statuses,
        runs,
        metrics,
        current_image=current_image,
        now=now,
        prometheus=state,
        warnings=warnings,
    )

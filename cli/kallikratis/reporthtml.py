"""The scorecard as one self-contained HTML page: inline CSS, inline SVG charts, no request
to any other host. Rendered by the one Jinja2 environment (autoescape on for .html.j2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kallikratis import render, reportcharts
from kallikratis.prometheus_api import Series
from kallikratis.report import Report
from kallikratis.reportmetrics import DAY, RANGE_DAYS

TEMPLATE = "report.html.j2"
#: a heatmap shows at most this many municipalities (the lowest): 332 rows would be unreadable
#: and slow to draw; the table has every one
HEATMAP_ROWS = 40
#: checks whose cell shows its figure even when green (the others show a tick)
VALUED = ("availability", "tls", "disk", "patch", "verify")


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}".replace(",", " ") if value == int(value) else f"{value:.1f}"


def lowest(series: Sequence[Series], names: dict[str, str], limit: int) -> dict[str, str]:
    """The *limit* municipalities of *names* with the lowest mean over *series*, lowest first;
    those without any data come first of all (they are the first to look at)."""
    by_slug = {s.labels.get("municipality", ""): s.points for s in series}

    def mean(slug: str) -> float:
        values = [v for _, v in by_slug.get(slug, ()) if not math.isnan(v)]
        return sum(values) / len(values) if values else -math.inf

    return {slug: names[slug] for slug in sorted(names, key=mean)[:limit]}


def _heatmap(
    report: Report, key: str, what: str, end: float, **style: Any
) -> tuple[str, str] | None:
    series = report.metrics.ranges.get(key)
    if series is None:
        return None
    names = {r.slug: r.display_name or r.slug for r in report.rows}
    shown = lowest(series, names, HEATMAP_ROWS) if len(names) > HEATMAP_ROWS else names
    which = f"the {len(shown)} lowest of {len(names)}" if len(shown) < len(names) else "all"
    caption = f"{what.capitalize()} per day over {RANGE_DAYS} days ({which} municipalities)"
    return caption, reportcharts.heatmap(series, shown, end=end, title=what, **style)


def charts(report: Report) -> list[tuple[str, str]]:
    """(caption, inline SVG) of each chart whose data Prometheus gave."""
    ranges = report.metrics.ranges
    end = report.metrics.value("now", "") or report.generated
    found = [
        _heatmap(
            report, "availability_daily", "availability (site probe, 1 = always up)", end,
            cmap="RdYlGn", vmin=0.9, vmax=1.0,
        ),
        _heatmap(report, "requests_daily", "requests", end, cmap="Blues"),
    ]  # fmt: skip
    out = [chart for chart in found if chart]
    pending = {
        label: ranges[key]
        for label, key in (
            ("all updates", "pending_over_time"),
            ("security updates", "security_pending_over_time"),
        )
        if key in ranges
    }
    if pending:
        out.append(
            (
                "Updates pending over time, whole fleet",
                reportcharts.lines(
                    pending,
                    title="updates pending",
                    ylabel="packages",
                    window=(end - RANGE_DAYS * DAY, end),
                ),
            )
        )
    return out


def page(report: Report) -> str:
    """The HTML document (UTF-8 text)."""
    generated = datetime.fromtimestamp(report.generated, UTC).strftime("%Y-%m-%d %H:%M UTC")
    check_names = [c.name for c in report.rows[0].checks] if report.rows else []
    return render.render(
        TEMPLATE,
        report=report,
        generated=generated,
        check_names=check_names,
        charts=charts(report),
        num=_num,
        valued=VALUED,
    )

"""The scorecard as one self-contained HTML page: inline CSS, inline SVG charts, no request
to any other host. Rendered by the one Jinja2 environment (autoescape on for .html.j2)."""

from __future__ import annotations

from datetime import UTC, datetime

from kallikratis import render, reportcharts
from kallikratis.report import Report
from kallikratis.reportmetrics import RANGE_DAYS

TEMPLATE = "report.html.j2"


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}".replace(",", " ") if value == int(value) else f"{value:.1f}"


def charts(report: Report) -> list[tuple[str, str]]:
    """(caption, inline SVG) of each chart whose data Prometheus gave."""
    ranges = report.metrics.ranges
    names = {r.slug: r.display_name or r.slug for r in report.rows}
    end = report.metrics.value("now", "") or report.generated
    out = []
    if "availability_daily" in ranges:
        out.append(
            (
                f"Availability per day over {RANGE_DAYS} days (site probe; 1 = always up)",
                reportcharts.heatmap(
                    ranges["availability_daily"],
                    names,
                    end=end,
                    title="availability",
                    cmap="RdYlGn",
                    vmin=0.9,
                    vmax=1.0,
                ),
            )
        )
    if "requests_daily" in ranges:
        out.append(
            (
                f"Requests per day per municipality over {RANGE_DAYS} days",
                reportcharts.heatmap(
                    ranges["requests_daily"],
                    names,
                    end=end,
                    title="requests per day",
                    cmap="Blues",
                ),
            )
        )
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
                reportcharts.lines(pending, title="updates pending", ylabel="packages"),
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
    )

"""The scorecard's charts, drawn by matplotlib as inline SVG (Figure objects, no pyplot: no
global state, no GUI backend).

Text is drawn as paths (``svg.fonttype = path``) in DejaVu Sans, which has Greek: the page
needs no font and no other file. Heatmaps (municipality x day) stay readable for 332 rows.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib
import matplotlib.dates as mdates
from matplotlib.figure import Figure

from kallikratis.prometheus_api import Series
from kallikratis.reportmetrics import DAY

ROW_INCHES = 0.16
_COMMENT = re.compile(r"<!--.*?-->\n?", re.S)
STYLE: Any = {
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "svg.hashsalt": "kallikratis",  # the same data gives the same page
}


def _svg(fig: Figure) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML
    # matplotlib repeats every text as a comment (escaped, "--" broken up): not needed, since
    # the glyphs are paths; dropping them keeps inventory strings out of the page's markup
    return _COMMENT.sub("", text)


def _short(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _days(end: float, count: int) -> list[float]:
    start = math.floor(end / DAY) - count + 1
    return [(start + i) * DAY for i in range(count)]


def _label(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%d/%m")


def heatmap(
    series: Sequence[Series],
    names: dict[str, str],
    *,
    end: float,
    title: str,
    cmap: str,
    vmin: float | None = None,
    vmax: float | None = None,
    days: int = 30,
) -> str:
    """One row per municipality (in *names* order), one column per day; blank where no data."""
    by_slug = {s.labels.get("municipality", ""): s for s in series}
    columns = _days(end, days)
    grid = []
    for slug in names:
        points = (
            {math.floor(t / DAY): v for t, v in by_slug[slug].points} if slug in by_slug else {}
        )
        grid.append([points.get(math.floor(c / DAY), math.nan) for c in columns])
    rows = max(len(grid), 8)  # a few municipalities still get a readable colour bar
    with matplotlib.rc_context(STYLE):
        # fixed margins (inches), no "tight" layout: measuring every label costs a second
        width, left, right, top, bottom = 10.0, 2.7, 1.0, 0.35, 0.45
        height = top + bottom + ROW_INCHES * rows
        fig = Figure(figsize=(width, height))
        ax = fig.subplots()
        fig.subplots_adjust(
            left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height
        )
        image = ax.imshow(
            grid or [[math.nan] * days],
            aspect="auto",
            interpolation="nearest",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
        )
        ax.set_yticks(range(len(names)), [_short(n) for n in names.values()])
        ticks = list(range(0, days, 5))
        ax.set_xticks(ticks, [_label(columns[i]) for i in ticks])
        ax.set_title(title, loc="left")
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
        return _svg(fig)


def lines(
    series: Mapping[str, Sequence[Series]],
    *,
    title: str,
    ylabel: str,
    window: tuple[float, float],
) -> str:
    """One line per named series (each a single fleet-wide series), dates on the x axis over
    *window* (start, end): a young fleet's few points stay visible (a marker on each) at the
    window's end, instead of an axis autoscaled around a single point."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10.0, 2.8))
        ax = fig.subplots()
        fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.22)
        for label, found in series.items():
            for s in found:
                ax.plot(
                    [mdates.date2num(datetime.fromtimestamp(t, UTC)) for t, _ in s.points],
                    [v for _, v in s.points],
                    label=label,
                    drawstyle="steps-post",
                    marker="o" if len(s.points) < 3 else None,
                    markersize=3,
                )
        start, end = window
        pad = (end - start) / 100  # the last point's marker whole, not cut at the frame
        ax.set_xlim(*(mdates.date2num(datetime.fromtimestamp(t, UTC)) for t in (start, end + pad)))
        ax.xaxis_date(tz=UTC)
        ax.set_title(title, loc="left")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if any(series.values()):
            ax.legend(loc="upper left")
        fig.autofmt_xdate()
        return _svg(fig)

"""Live progress for long work: a table on a terminal, timestamped lines otherwise."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.live import Live
from rich.table import Table

from kallikratis.commands.common import console_err, esc

TERMINAL = (
    "created",
    "changed",
    "started",
    "unchanged",
    "failed",
    "destroyed",
    "absent",
    "patched",
    "skipped",
    "planned",
    "passed",
    "no checks",
    "backed up",
    "restored",
)


class PhaseBoard:
    """Thread-safe (slug, phase) reporter, usable as the engine's progress callback."""

    def __init__(self, slugs: list[str], title: str) -> None:
        self.title = title
        self.start = time.monotonic()
        self.phases = {s: "queued" for s in slugs}
        self.ended: dict[str, float] = {}
        self.lock = threading.Lock()
        self.live: Live | None = None
        if console_err.is_terminal:
            self.live = Live(
                self._table(), console=console_err, refresh_per_second=4, transient=False
            )

    def _table(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        table.add_column("municipality")
        table.add_column("phase")
        table.add_column("time", justify="right")
        now = time.monotonic()
        for slug, phase in self.phases.items():
            table.add_row(esc(slug), esc(phase), f"{self.ended.get(slug, now) - self.start:.0f} s")
        return table

    def __call__(self, slug: str, phase: str) -> None:
        with self.lock:
            if slug != "*":
                self.phases[slug] = phase
                if phase in TERMINAL:
                    self.ended[slug] = time.monotonic()
            if self.live is not None:
                self.live.update(self._table())
            else:
                stamp = time.monotonic() - self.start
                console_err.print(f"[{stamp:6.1f}s] {esc(slug)}: {esc(phase)}")

    def __enter__(self) -> PhaseBoard:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(et, ev, tb)

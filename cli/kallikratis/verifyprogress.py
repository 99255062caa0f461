"""Per-municipality progress of `verify`: both ends of one small protocol.

The suites run in a pytest child process. This module is also a pytest plugin (loaded there
with ``-p kallikratis.verifyprogress``) that writes one JSON line per event to the file
descriptor named by KALLIKRATIS_VERIFY_EVENTS_FD: what was collected per municipality, each
test's start and result. :func:`run_pytest` runs the child and turns those events into
``progress(slug, phase)`` calls as each municipality starts and finishes. Structured events,
not a parse of pytest's output; the events carry test names and outcomes, never messages.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
EVENTS_FD_ENV = "KALLIKRATIS_VERIFY_EVENTS_FD"
PLUGIN = "kallikratis.verifyprogress"
Progress = Callable[[str, str], None]  # (slug, phase)

# --------------------------------------------------------------------------- the child's end

_slugs: dict[str, str] = {}  # nodeid -> municipality ("*" for tests of no municipality)
_failed: set[str] = set()


def _emit(event: dict[str, Any]) -> None:
    fd = os.environ.get(EVENTS_FD_ENV)
    if fd:
        os.write(int(fd), (json.dumps(event) + "\n").encode())


def _slug_of(item: Any) -> str:
    host = getattr(getattr(item, "callspec", None), "params", {}).get("_testinfra_host")
    backend = getattr(host, "backend", None)
    return str(backend.get_hostname()) if backend is not None else "*"


def pytest_collection_finish(session: Any) -> None:
    for item in session.items:
        _slugs[item.nodeid] = _slug_of(item)
    _emit({"collected": dict(Counter(_slugs.values()))})


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _emit({"start": _slugs.get(nodeid, "*"), "test": location[2].partition("[")[0]})


def pytest_runtest_logreport(report: Any) -> None:
    if report.failed or (report.skipped and report.when != "teardown"):
        _failed.add(report.nodeid)  # parse_junit counts a skipped check as not passed


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    slug = _slugs.get(nodeid, "*")
    _emit({"done": slug, "test": location[2].partition("[")[0], "passed": nodeid not in _failed})


# --------------------------------------------------------------------------- the parent's end


class Tracker:
    """Turns the child's events into one phase per municipality."""

    def __init__(self, slugs: list[str], progress: Progress) -> None:
        self.slugs = slugs
        self.progress = progress
        self.total: dict[str, int] = {}
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.finished: set[str] = set()

    def handle(self, event: dict[str, Any]) -> None:
        if "collected" in event:
            self.total = {s: int(n) for s, n in event["collected"].items()}
            for slug in self.slugs:
                if not self.total.get(slug):
                    self._finish(slug, "no checks")
            return
        slug = str(event.get("start") or event.get("done"))
        if slug not in self.slugs or slug in self.finished:
            return
        total = self.total.get(slug, 0)
        if "start" in event:
            self.progress(slug, f"checking {self.done[slug] + 1}/{total}: {event.get('test')}")
            return
        self.done[slug] += 1
        self.failed[slug] += not event.get("passed")
        if self.done[slug] >= total:
            self._finish(slug, "failed" if self.failed[slug] else "passed")

    def close(self) -> None:
        """The child ended: a municipality whose checks did not all report failed."""
        for slug in self.slugs:
            if slug not in self.finished:
                self._finish(slug, "failed")

    def _finish(self, slug: str, phase: str) -> None:
        self.finished.add(slug)
        self.progress(slug, phase)


def _read(fd: int, tracker: Tracker) -> None:
    with os.fdopen(fd, "rb") as events:
        for line in events:
            try:
                tracker.handle(json.loads(line))
            except Exception:  # noqa: BLE001 - progress must never break a verify run
                log.debug("verify progress event dropped: %r", line, exc_info=True)


def run_pytest(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    slugs: list[str],
    progress: Progress | None,
) -> subprocess.CompletedProcess[str]:
    """Run the pytest command *argv* (which must not already name this plugin); report each
    municipality of *slugs* to *progress* as its checks start and when they are all done."""
    if progress is None:
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    read_fd, write_fd = os.pipe()
    tracker = Tracker(slugs, progress)
    reader = threading.Thread(target=_read, args=(read_fd, tracker), daemon=True)
    try:
        child = subprocess.Popen(
            [*argv, "-p", PLUGIN],
            env={**env, EVENTS_FD_ENV: str(write_fd)},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(write_fd,),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds its copy; EOF when it exits
    reader.start()
    stdout, stderr = child.communicate()
    reader.join(timeout=10)
    tracker.close()
    return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)

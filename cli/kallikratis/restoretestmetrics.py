"""Each restore test's result, handed to the monitoring on `control` (textfiles, like
:mod:`kallikratis.backupmetrics`), label ``municipality``:

- ``kallikratis-restore-test-run-<slug>.prom`` (every run):
  ``kallikratis_restore_test_last_run_timestamp_seconds`` and
  ``kallikratis_restore_test_last_success`` (1 or 0)
- ``kallikratis-restore-test-<slug>.prom`` (on success only, so a failed run never hides when
  the backups were last proven): ``kallikratis_restore_test_last_success_timestamp_seconds``

Alerts (roles/monitoring): RestoreTestFailed (the last run failed) and RestoreTestTooOld (no
successful restore test for more than ``monitoring_restore_test_max_age_seconds``, 8 days).
Best effort: an unreachable control costs a warning, never the test's result.
"""

from __future__ import annotations

from collections.abc import Iterable

from kallikratis.backupmetrics import gauge, publish_files
from kallikratis.guest import Guest
from kallikratis.restoretest import RestoreTestOutcome


def textfiles(o: RestoreTestOutcome, finished: float) -> dict[str, str]:
    label = f'{{municipality="{o.slug}"}}'
    ok = o.result == "passed"
    files = {
        f"kallikratis-restore-test-run-{o.slug}.prom": gauge(
            "kallikratis_restore_test_last_run_timestamp_seconds",
            "When the municipality's last restore test ended.",
            label,
            f"{finished:.0f}",
        )
        + gauge(
            "kallikratis_restore_test_last_success",
            "1 when the municipality's last restore test passed.",
            label,
            "1" if ok else "0",
        )
    }
    if ok:
        files[f"kallikratis-restore-test-{o.slug}.prom"] = gauge(
            "kallikratis_restore_test_last_success_timestamp_seconds",
            "When the municipality's last passed restore test ended.",
            label,
            f"{finished:.0f}",
        )
    return files


def publish(outcomes: Iterable[RestoreTestOutcome], finished: float, control: Guest) -> str:
    """Write *outcomes* to control; "" or a warning to show."""
    files: dict[str, str] = {}
    for o in outcomes:
        files.update(textfiles(o, finished))
    return publish_files(files, control, "restore-test")

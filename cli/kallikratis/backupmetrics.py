"""Each backup run's result, handed to the monitoring on the central `control` VM.

Like :mod:`kallikratis.patchmetrics`: Prometheus textfiles in control's node-exporter textfile
directory, label ``municipality``. Two files per municipality, so that a failed run never
hides when the last good backup was:

- ``kallikratis-backup-<slug>.prom`` (written on success only):
  ``kallikratis_backup_last_success_timestamp_seconds``, ``kallikratis_backup_last_size_bytes``
  (original size of that archive), ``kallikratis_backup_last_deduplicated_bytes``
- ``kallikratis-backup-run-<slug>.prom`` (every run):
  ``kallikratis_backup_last_run_timestamp_seconds`` and
  ``kallikratis_backup_last_run_success`` (1 or 0)

With an off-site copy (``backup_remote``), the run file also holds
``kallikratis_backup_last_run_remote_success`` (1 or 0), and
``kallikratis-backup-remote-<slug>.prom`` (written when the off-site copy was made) holds
``kallikratis_backup_remote_last_success_timestamp_seconds``. A ``partial`` run (control's
archive made, the off-site copy failed) is a success for control's metrics.

The alert BackupTooOld (roles/monitoring) fires when the last success is older than 26 h,
BackupRemoteTooOld when the last off-site copy is (or when none was ever made).
Best effort: a control VM that cannot be reached costs a warning, never the run's result.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable

from kallikratis.backups import Outcome
from kallikratis.guest import Guest, GuestError
from kallikratis.patchmetrics import TEXTFILE_DIR

log = logging.getLogger(__name__)


def gauge(name: str, help_text: str, label: str, value: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name}{label} {value}\n"


def textfiles(o: Outcome, finished: float) -> dict[str, str]:
    """File name -> content of one municipality's outcome (slugs are DNS labels)."""
    label = f'{{municipality="{o.slug}"}}'
    ok = o.result in ("ok", "partial") and o.archive is not None
    files = {
        f"kallikratis-backup-run-{o.slug}.prom": gauge(
            "kallikratis_backup_last_run_timestamp_seconds",
            "When the municipality's last backup run ended.",
            label,
            f"{finished:.0f}",
        )
        + gauge(
            "kallikratis_backup_last_run_success",
            "1 when the municipality's last backup run succeeded.",
            label,
            "1" if ok else "0",
        )
    }
    if o.remote:
        files[f"kallikratis-backup-run-{o.slug}.prom"] += gauge(
            "kallikratis_backup_last_run_remote_success",
            "1 when the municipality's last backup run made its off-site copy.",
            label,
            "1" if o.remote == "ok" else "0",
        )
    if o.remote == "ok":
        files[f"kallikratis-backup-remote-{o.slug}.prom"] = gauge(
            "kallikratis_backup_remote_last_success_timestamp_seconds",
            "When the municipality's last off-site copy was made.",
            label,
            f"{finished:.0f}",
        )
    if ok and o.archive is not None:
        files[f"kallikratis-backup-{o.slug}.prom"] = (
            gauge(
                "kallikratis_backup_last_success_timestamp_seconds",
                "When the municipality's last good backup ended.",
                label,
                f"{finished:.0f}",
            )
            + gauge(
                "kallikratis_backup_last_size_bytes",
                "Original size of the municipality's last archive.",
                label,
                str(o.archive.original_size),
            )
            + gauge(
                "kallikratis_backup_last_deduplicated_bytes",
                "What the municipality's last archive added to its repository.",
                label,
                str(o.archive.deduplicated_size),
            )
        )
    return files


def script(files: dict[str, str]) -> str:
    """A shell script writing each file atomically into the textfile directory."""
    lines = [f"install -d -m 0755 {TEXTFILE_DIR}"]
    for name, text in sorted(files.items()):
        final = f"{TEXTFILE_DIR}/{name}"
        lines += [
            f"printf %s {shlex.quote(text)} > {final}.tmp",
            f"chmod 0644 {final}.tmp",
            f"mv -f {final}.tmp {final}",
        ]
    return "\n".join(lines) + "\n"


def publish(outcomes: Iterable[Outcome], finished: float, control: Guest) -> str:
    """Write *outcomes* to control; "" or a warning to show."""
    files: dict[str, str] = {}
    for o in outcomes:
        files.update(textfiles(o, finished))
    return publish_files(files, control, "backup")


def publish_files(files: dict[str, str], control: Guest, what: str) -> str:
    """Write textfiles (name -> content) on control; "" or a warning to show (best effort)."""
    if not files:
        return ""
    try:
        control.run(script(files), timeout=60)
    except GuestError as exc:
        log.warning("%s results not handed to the monitoring: %s", what, exc.message)
        return f"the monitoring on control did not get this run's results: {exc.message}"
    return ""

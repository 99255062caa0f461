"""Each patch run's result, handed to the monitoring on the central `control` VM.

The controller writes one Prometheus textfile per VM into control's node-exporter textfile
directory (``kallikratis_patch_last_run_timestamp_seconds`` and ``kallikratis_patch_last_success``,
label ``municipality``), so the ``PatchRunFailed`` alert and the scorecard see a failed run
even though the failed VM itself was reverted to its snapshot (a file written there would be
reverted with it). Best effort: a control VM that cannot be reached costs a warning, never the
patch run's result.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Iterable

from kallikratis import model
from kallikratis.guest import Guest, GuestError

log = logging.getLogger(__name__)
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
#: the outcomes that are a finished run of a VM (skipped and planned VMs were not patched)
RECORDED = {"patched": 1, "unchanged": 1, "failed": 0}


def textfile(slug: str, result: str, finished: float) -> str:
    """The metrics of one VM's patch outcome (slugs are DNS labels: nothing to escape)."""
    label = f'{{municipality="{slug}"}}'
    return (
        "# HELP kallikratis_patch_last_run_timestamp_seconds When the VM's last patch run ended.\n"
        "# TYPE kallikratis_patch_last_run_timestamp_seconds gauge\n"
        f"kallikratis_patch_last_run_timestamp_seconds{label} {finished:.0f}\n"
        "# HELP kallikratis_patch_last_success 1 when the VM's last patch run succeeded.\n"
        "# TYPE kallikratis_patch_last_success gauge\n"
        f"kallikratis_patch_last_success{label} {RECORDED[result]}\n"
    )


def script(files: dict[str, str]) -> str:
    """A shell script writing each file atomically into the textfile directory."""
    lines = [f"install -d -m 0755 {TEXTFILE_DIR}"]
    for slug, text in sorted(files.items()):
        final = f"{TEXTFILE_DIR}/kallikratis-patch-{slug}.prom"
        lines += [
            f"printf %s {shlex.quote(text)} > {final}.tmp",
            f"chmod 0644 {final}.tmp",
            f"mv -f {final}.tmp {final}",
        ]
    return "\n".join(lines) + "\n"


def publish(
    fleet: model.Fleet,
    outcomes: Iterable[tuple[str, str]],
    finished: float,
    guest_of: Callable[[model.Municipality], Guest],
) -> str:
    """Write the (slug, result) *outcomes* to control; "" or a warning to show."""
    control = fleet.control
    files = {s: textfile(s, r, finished) for s, r in outcomes if r in RECORDED}
    if control is None or not files:
        return ""
    try:
        guest_of(control).run(script(files), timeout=60)
    except GuestError as exc:
        log.warning("patch results not handed to the monitoring: %s", exc.message)
        return f"the monitoring on {control.slug} did not get this run's results: {exc.message}"
    return ""

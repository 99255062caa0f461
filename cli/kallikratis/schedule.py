"""Unattended runs: systemd timer + service units for scheduled patching, and maintenance windows.

A maintenance window is an inventory field, ``patch_window: "Sat,Sun 01:00-04:00"``: days
(``Mon`` .. ``Sun``, a list, or a range like ``Mon..Fri``) and a start-end time in the control
node's local time. An end before the start crosses midnight: ``"Sun 23:00-02:00"`` runs from
Sunday 23:00 to Monday 02:00.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kallikratis import patchbudget
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.hypervisor.reconnect import RECONNECT_ENV, reconnect_seconds

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
UNIT_DIR = Path("/etc/systemd/system")
UNIT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


# -- maintenance windows -----------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int  # minutes after midnight
    end: int  # exclusive; end < start crosses midnight into the next day

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        day = when.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        yesterday = (day - 1) % 7
        return (day in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("..")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day {part!r} (days are {', '.join(DAYS)})")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def _minutes(text: str) -> int:
    match = _TIME_RE.match(text)
    if not match:
        raise ValueError(f"not a time HH:MM (00:00-23:59): {text!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_window(window: str) -> Window:
    """``"Sat,Sun 01:00-04:00"`` -> Window. Raises ValueError with a readable message."""
    parts = window.split()
    if len(parts) != 2 or parts[1].count("-") != 1:
        raise ValueError(
            f"must look like 'Sun 02:00-05:00' or 'Sat,Sun 23:00-02:00', got {window!r}"
        )
    start, end = (_minutes(t) for t in parts[1].split("-"))
    if start == end:
        raise ValueError(f"start and end are the same time: {window!r}")
    return Window(_parse_days(parts[0]), start, end)


def window_error(value: Any) -> str | None:
    """Why *value* is not a valid ``patch_window`` (None when it is valid or empty)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        return f"must be a string like 'Sun 02:00-05:00', got {value!r}"
    try:
        parse_window(value)
    except ValueError as exc:
        return str(exc)
    return None


def in_window(window: str, when: datetime) -> bool:
    """Whether *when* falls inside *window*; an empty window means "any time"."""
    return True if not window else parse_window(window).contains(when)


# -- systemd units -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Units:
    name: str  # kallikratis-patch or kallikratis-patch-NAME
    service: str
    timer: str

    def files(self) -> dict[str, str]:
        return {f"{self.name}.service": self.service, f"{self.name}.timer": self.timer}


def _escape(value: str) -> str:
    """A systemd unit file value: specifiers (%) and, in commands, variables ($) kept literal."""
    return value.replace("%", "%%")


def _quote(arg: str) -> str:
    """One ExecStart word, quoted for systemd's own command-line parser (not a shell)."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return _escape(escaped)
    return _escape(f'"{escaped}"')


def _env(assignment: str) -> str:
    """One Environment= assignment (no $ expansion there; quotes and % still special)."""
    return _escape('"' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"')


def _ini(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]], kind: str = "patch") -> str:
    blocks = []
    for title, pairs in sections:
        lines = [f"[{title}]", *(f"{key}={value}" for key, value in pairs)]
        blocks.append("\n".join(lines))
    return f"# Written by `kallikratis schedule {kind}`; edit with that command.\n" + (
        "\n\n".join(blocks) + "\n"
    )


def executable() -> list[str]:
    """How the service starts kallikratis: the installed entry point next to this Python."""
    script = Path(sys.executable).parent / "kallikratis"
    if script.is_file():
        return [str(script)]
    found = shutil.which("kallikratis")
    return [str(Path(found).resolve())] if found else [sys.executable, "-m", "kallikratis.cli"]


def unit_name(name: str, kind: str = "patch") -> str:
    if name and not UNIT_NAME_RE.match(name):
        raise UsageError(f"--name must be a short lower-case name (a-z, 0-9, '-'), got {name!r}")
    return f"kallikratis-{kind}-{name}" if name else f"kallikratis-{kind}"


#: the run needs libvirt's socket, SSH to the VMs and the state directory; nothing else
HARDENING = (
    ("Nice", "10"),
    ("IOSchedulingClass", "best-effort"),
    ("IOSchedulingPriority", "7"),
    ("UMask", "0077"),
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectSystem", "full"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
)


def patch_units(
    *,
    on_calendar: str,
    inventory: Path,
    state_dir: Path,
    fleet: str,
    name: str = "",
    timeout_hours: int = 4,
    command: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> Units:
    """The service (one unattended ``patch --all --scheduled`` run) and its timer."""
    unit = unit_name(name)
    argv = [*(command or executable()), "-i", str(inventory), "patch", "--all", "--scheduled"]
    env = {"KALLIKRATIS_STATE_DIR": str(state_dir)}
    if RECONNECT_ENV in os.environ:  # the bound the stop budget was computed with
        env[RECONNECT_ENV] = str(reconnect_seconds())
    env.update(environment or {})
    if any("\n" in a for a in [*argv, *env.values()]):
        raise UsageError("paths with a newline cannot go into a systemd unit")
    service_unit = [
        ("Description", _escape(f"Kallikratis scheduled patch run of fleet {fleet}")),
        ("Wants", "network-online.target"),
        ("After", "network-online.target libvirtd.service"),
    ]
    service = [
        ("Type", "oneshot"),
        ("ExecStart", " ".join(_quote(a) for a in argv)),
        *(("Environment", _env(f"{k}={v}")) for k, v in env.items()),
        ("Environment", "PYTHONUNBUFFERED=1"),
        ("TimeoutStartSec", f"{timeout_hours}h"),
        # stopping (systemctl stop, or TimeoutStartSec reached) sends SIGTERM to the CLI
        # alone (mixed): its handler reverts the VMs it changed, over SSH and libvirt, which
        # must not be killed under it; SIGKILL for all only after the revert budget
        ("KillMode", "mixed"),
        ("KillSignal", "SIGTERM"),
        ("TimeoutStopSec", f"{patchbudget.stop_seconds(reconnect_seconds())}s"),
        *HARDENING,
    ]
    timer = [
        ("OnCalendar", _escape(on_calendar)),
        ("Persistent", "true"),
        ("RandomizedDelaySec", "5min"),
        ("AccuracySec", "1min"),
        ("Unit", f"{unit}.service"),
    ]
    timer_unit = [("Description", _escape(f"Kallikratis scheduled patching of fleet {fleet}"))]
    return Units(
        unit,
        _ini([("Unit", service_unit), ("Service", service)]),
        _ini(
            [("Unit", timer_unit), ("Timer", timer), ("Install", [("WantedBy", "timers.target")])]
        ),
    )


def report_units(
    *,
    on_calendar: str,
    inventory: Path,
    state_dir: Path,
    fleet: str,
    name: str = "",
    command: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> Units:
    """The service (one ``report --publish``: the dashboard on control) and its timer.

    Exit 5 (some municipality red) is the report's finding, not a failure of the unit.
    """
    return _command_units(
        "report",
        ["report", "--publish"],
        f"Kallikratis fleet scorecard of {fleet}",
        on_calendar=on_calendar,
        inventory=inventory,
        state_dir=state_dir,
        name=name,
        command=command,
        environment=environment,
        service_extra=[("SuccessExitStatus", "5"), ("TimeoutStartSec", "15min")],
    )


def backup_units(
    *,
    on_calendar: str,
    inventory: Path,
    state_dir: Path,
    fleet: str,
    name: str = "",
    timeout_hours: int = 6,
    command: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> Units:
    """The service (one ``backup --all``) and its timer. A municipality that was not backed
    up (exit 5) fails the unit: `systemctl --failed` shows it, besides the BackupFailed alert."""
    return _command_units(
        "backup",
        ["backup", "--all"],
        f"Kallikratis scheduled backup of fleet {fleet}",
        on_calendar=on_calendar,
        inventory=inventory,
        state_dir=state_dir,
        name=name,
        command=command,
        environment=environment,
        service_extra=[("TimeoutStartSec", f"{timeout_hours}h")],
    )


#: restore tests: weekly, after the night's backup
RESTORE_TEST_CALENDAR = "Sat *-*-* 05:00"


def restore_test_units(*, fleet: str, timeout_hours: int = 12, **place: Any) -> Units:
    """The service (one ``restore-test --all``) and its timer; a failed test fails the unit."""
    return _command_units(
        "restore-test",
        ["restore-test", "--all"],
        f"Kallikratis scheduled restore test of fleet {fleet}",
        service_extra=[("TimeoutStartSec", f"{timeout_hours}h")],
        **{"name": "", "command": None, "environment": None, **place},
    )


def _command_units(
    kind: str,
    args: Sequence[str],
    about_text: str,
    *,
    on_calendar: str,
    inventory: Path,
    state_dir: Path,
    name: str,
    command: Sequence[str] | None,
    environment: Mapping[str, str] | None,
    service_extra: Sequence[tuple[str, str]],
) -> Units:
    """A oneshot service running ``kallikratis -i INVENTORY ARGS`` and its persistent timer."""
    unit = unit_name(name, kind)
    argv = [*(command or executable()), "-i", str(inventory), *args]
    env = {"KALLIKRATIS_STATE_DIR": str(state_dir), **(environment or {})}
    if any("\n" in a for a in [*argv, *env.values()]):
        raise UsageError("paths with a newline cannot go into a systemd unit")
    service = [
        ("Type", "oneshot"),
        ("ExecStart", " ".join(_quote(a) for a in argv)),
        *(("Environment", _env(f"{k}={v}")) for k, v in env.items()),
        ("Environment", "PYTHONUNBUFFERED=1"),
        *service_extra,
        *HARDENING,
    ]
    timer = [
        ("OnCalendar", _escape(on_calendar)),
        ("Persistent", "true"),
        ("RandomizedDelaySec", "1min"),
        ("AccuracySec", "1min"),
        ("Unit", f"{unit}.service"),
    ]
    about = _escape(about_text)
    service_unit = [
        ("Description", about),
        ("Wants", "network-online.target"),
        ("After", "network-online.target libvirtd.service"),
    ]
    return Units(
        unit,
        _ini([("Unit", service_unit), ("Service", service)], kind),
        _ini(
            [
                ("Unit", [("Description", about + " (timer)")]),
                ("Timer", timer),
                ("Install", [("WantedBy", "timers.target")]),
            ],
            kind,
        ),
    )


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def check_calendar(on_calendar: str, run: Runner = _run) -> bool:
    """Validate with ``systemd-analyze calendar``; False when that tool is not installed."""
    if not on_calendar.strip() or "\n" in on_calendar:
        raise UsageError(f"--on-calendar is not a systemd calendar expression: {on_calendar!r}")
    if not shutil.which("systemd-analyze"):
        return False
    proc = run(["systemd-analyze", "calendar", on_calendar])
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise UsageError(
            f"--on-calendar {on_calendar!r} is not a valid systemd calendar expression"
            + (f": {why[-1]}" if why else "")
            + " (examples: 'Sun *-*-* 02:00', 'daily', 'Mon..Fri 03:30')"
        )
    return True


def systemd_running() -> bool:
    """True when systemd is the init system (sd_booted(3))."""
    return Path("/run/systemd/system").is_dir()


def install(units: Units, unit_dir: Path = UNIT_DIR, run: Runner = _run) -> list[Path]:
    """Write the unit files, reload systemd and enable + start the timer."""
    if not systemd_running():
        raise UsageError(
            "systemd is not the init system here, so a timer cannot be installed; "
            "use --print and install the units on the control node by hand"
        )
    written = []
    for filename, text in units.files().items():
        path = unit_dir / filename
        try:
            path.write_text(text, encoding="utf-8")
            path.chmod(0o644)
        except OSError as exc:
            raise KallikratisError(f"cannot write {path}: {exc} (run as root?)") from exc
        written.append(path)
    for argv in (
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", f"{units.name}.timer"],
    ):
        proc = run(argv)
        if proc.returncode != 0:
            raise KallikratisError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return written

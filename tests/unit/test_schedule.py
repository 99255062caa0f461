"""Schedules: maintenance windows (parsing, midnight, bad input in the inventory) and the
systemd units of `schedule patch`, checked with the real `systemd-analyze verify`.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import guest, patchbudget, schedule
from kallikratis.cli import main_group
from kallikratis.errors import InventoryError, UsageError
from support import InventoryCopy, check_golden, systemd_verify_units

# 2025-06-01 is a Sunday
SUN, MON, SAT, WED = 1, 2, 7, 4


def at(day: int, hhmm: str) -> datetime:
    hour, minute = map(int, hhmm.split(":"))
    return datetime(2025, 6, day, hour, minute)


@pytest.mark.parametrize(
    ("window", "when", "inside"),
    [
        ("Sun 02:00-05:00", at(SUN, "02:00"), True),
        ("Sun 02:00-05:00", at(SUN, "04:59"), True),
        ("Sun 02:00-05:00", at(SUN, "05:00"), False),
        ("Sun 02:00-05:00", at(SUN, "01:59"), False),
        ("Sun 02:00-05:00", at(MON, "03:00"), False),
        ("Sat,Sun 01:00-04:00", at(SAT, "01:30"), True),
        ("Sat,Sun 01:00-04:00", at(SUN, "03:59"), True),
        ("Sat,Sun 01:00-04:00", at(WED, "02:00"), False),
        ("Sun 23:00-02:00", at(SUN, "23:30"), True),
        ("Sun 23:00-02:00", at(MON, "01:59"), True),  # the part after midnight is Monday
        ("Sun 23:00-02:00", at(MON, "02:00"), False),
        ("Sun 23:00-02:00", at(SUN, "01:00"), False),  # Saturday's night is not in it
        ("Sun 23:00-02:00", at(MON, "23:30"), False),
        ("Mon..Fri 03:00-04:00", at(WED, "03:10"), True),
        ("Mon..Fri 03:00-04:00", at(SAT, "03:10"), False),
        ("Sat..Mon 03:00-04:00", at(MON, "03:10"), True),
        ("Sat..Mon 03:00-04:00", at(WED, "03:10"), False),
        ("", at(WED, "12:00"), True),
    ],
)
def test_in_window(window: str, when: datetime, inside: bool) -> None:
    assert schedule.in_window(window, when) is inside


@pytest.mark.parametrize(
    ("window", "hint"),
    [
        ("Sun", "must look like"),
        ("Sun 02:00 - 05:00", "must look like"),
        ("Funday 02:00-05:00", "unknown day"),
        ("sun 02:00-05:00", "unknown day"),
        ("Sun 2:00-05:00", "HH:MM"),
        ("Sun 25:00-05:00", "HH:MM"),
        ("Sun 02:00-02:00", "same time"),
        ("Sat,,Sun 02:00-03:00", "unknown day"),
    ],
)
def test_bad_windows(window: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        schedule.parse_window(window)
    assert hint in (schedule.window_error(window) or "")


def test_window_error_accepts_empty_and_rejects_non_strings() -> None:
    assert schedule.window_error("") is None and schedule.window_error(None) is None
    assert "must be a string" in (schedule.window_error(5) or "")


def test_inventory_patch_window(inv: InventoryCopy) -> None:
    inv.set_host("hersonissos", patch_window="Sun 23:00-02:00")
    fleet = inv.load()
    assert fleet.get("hersonissos").patch_window == "Sun 23:00-02:00"
    assert fleet.get("minoa-pediada").patch_window == ""
    inv.set_host("minoa-pediada", patch_window="Sunday 02:00")
    with pytest.raises(InventoryError) as err:
        inv.load()
    [problem] = err.value.problems
    assert (problem.file, problem.entry, problem.field) == (
        str(inv.hosts),
        "minoa-pediada",
        "patch_window",
    )


def _print_units(inv: InventoryCopy, *extra: str) -> dict[str, str]:
    result = CliRunner().invoke(
        main_group,
        ["-i", str(inv.root), "schedule", "patch", "--on-calendar", "Sun *-*-* 02:00", "--print"]
        + list(extra),
    )
    assert result.exit_code == 0, result.output
    files: dict[str, str] = {}
    for chunk in result.output.split("# /etc/systemd/system/")[1:]:
        name, _, text = chunk.partition("\n")
        files[name] = text
    return files


def test_print_units_pass_systemd_analyze_verify(inv: InventoryCopy, tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package systemd"
    files = _print_units(inv, "--name", "weekly", "--timeout-hours", "6")
    assert sorted(files) == ["kallikratis-patch-weekly.service", "kallikratis-patch-weekly.timer"]
    service, timer = (
        files["kallikratis-patch-weekly.service"],
        files["kallikratis-patch-weekly.timer"],
    )
    assert f"-i {inv.root.resolve()} patch --all --scheduled" in service
    for line in ("Type=oneshot", "TimeoutStartSec=6h", "Nice=10", "KALLIKRATIS_STATE_DIR="):
        assert line in service
    assert "PrivateNetwork" not in service and "NetworkNamespacePath" not in service
    for line in ("OnCalendar=Sun *-*-* 02:00", "Persistent=true", "RandomizedDelaySec=5min"):
        assert line in timer
    proc = systemd_verify_units(tmp_path / "units", files)
    assert proc.returncode == 0, proc.stderr
    assert "kallikratis-patch" not in proc.stderr, proc.stderr


def test_unit_values_are_quoted_for_systemd(tmp_path: Path) -> None:
    odd = tmp_path / 'fleet "east" 100%$HOME'
    units = schedule.patch_units(
        on_calendar="daily",
        inventory=odd,
        state_dir=odd,
        fleet="crete",
        command=["/usr/bin/kallikratis"],
    )
    assert f'"{tmp_path}/fleet \\"east\\" 100%%$$HOME"' in units.service
    assert f'Environment="KALLIKRATIS_STATE_DIR={tmp_path}/fleet \\"east\\" 100%%$HOME"' in (
        units.service
    )
    with pytest.raises(UsageError, match="newline"):
        schedule.patch_units(
            on_calendar="daily", inventory=Path("/a\nb"), state_dir=tmp_path, fleet="crete"
        )


def test_bad_calendar_and_name_exit_2(inv: InventoryCopy) -> None:
    runner = CliRunner()
    args = ["-i", str(inv.root), "schedule", "patch", "--print"]
    bad = runner.invoke(main_group, [*args, "--on-calendar", "Funday 02:00"])
    assert isinstance(bad.exception, UsageError) and bad.exception.exit_code == 2
    assert "not a valid systemd calendar expression" in bad.exception.message
    name = runner.invoke(main_group, [*args, "--on-calendar", "daily", "--name", "Weekly!"])
    assert isinstance(name.exception, UsageError) and "--name" in name.exception.message


def test_install_refused_without_systemd(
    inv: InventoryCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule, "systemd_running", lambda: False)
    result = CliRunner().invoke(
        main_group, ["-i", str(inv.root), "schedule", "patch", "--on-calendar", "daily"]
    )
    assert isinstance(result.exception, UsageError)
    assert "--print" in result.exception.message


def test_install_writes_units_and_enables_the_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule, "systemd_running", lambda: True)
    calls: list[list[str]] = []

    def run(argv):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    units = schedule.patch_units(
        on_calendar="daily", inventory=tmp_path, state_dir=tmp_path, fleet="crete", name="x"
    )
    written = schedule.install(units, unit_dir=tmp_path, run=run)
    assert [p.name for p in written] == ["kallikratis-patch-x.service", "kallikratis-patch-x.timer"]
    assert calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "kallikratis-patch-x.timer"],
    ]


def test_service_gives_the_sigterm_handler_time_to_revert(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM to the CLI alone (KillMode=mixed: its handler reverts through SSH and libvirt
    children of its own); SIGKILL only once the revert budget is spent."""
    monkeypatch.delenv("KALLIKRATIS_LIBVIRT_RECONNECT_SECONDS", raising=False)
    units = schedule.patch_units(
        on_calendar="Sun *-*-* 02:00",
        inventory=Path("/srv/kallikratis/inventories/crete"),
        state_dir=Path("/var/lib/kallikratis"),
        fleet="crete",
        command=["/usr/local/bin/kallikratis"],
    )
    check_golden("schedule/kallikratis-patch.service", units.service)
    lines = units.service.splitlines()
    assert "KillMode=mixed" in lines and "KillSignal=SIGTERM" in lines
    budget = patchbudget.stop_seconds()
    assert f"TimeoutStopSec={budget}s" in lines
    # the longest guest step may still be running, then reconnect + revert + confirm
    assert budget >= guest.UPGRADE_TIMEOUT + 60 + patchbudget.VERIFY_SECONDS
    assert budget == 3540


def test_stop_budget_follows_the_reconnect_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALLIKRATIS_LIBVIRT_RECONNECT_SECONDS", "600")
    units = schedule.patch_units(
        on_calendar="daily", inventory=Path("/i"), state_dir=Path("/s"), fleet="crete"
    )
    assert f"TimeoutStopSec={patchbudget.stop_seconds(600)}s" in units.service
    assert 'Environment="KALLIKRATIS_LIBVIRT_RECONNECT_SECONDS=600.0"' in units.service
    assert patchbudget.stop_seconds(600) - patchbudget.stop_seconds(60) == 540

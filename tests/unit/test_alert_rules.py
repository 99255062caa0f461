"""The monitoring role's alert rules, rendered with the role's defaults and run through
`promtool test rules` (tests/unit/data/alert_rules_test.yml): every alert fires when it should,
for the broken municipality only, and not before its duration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from role_render import CONTROL_VARS, render
from support import DATA

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = "etc/prometheus/rules/kallikratis.rules.yml.j2"
ALERTS = {
    "PortalDown",
    "TargetDown",
    "CertificateExpiresSoon",
    "SecurityUpdatesPending",
    "RebootPending",
    "DiskAlmostFull",
    "MaintenanceModeTooLong",
    "PatchRunFailed",
    "MetricsCollectorFailed",
    "BackupTooOld",
    "BackupRemoteTooOld",
    "BackupFailed",
    "BackupCheckFailed",
    "RestoreTestFailed",
    "RestoreTestTooOld",
}


def _promtool_test(
    tmp_path: Path, only: str = "", **extra: object
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` over the rendered rules; *only*: the test groups of that alert
    alone (a whole run costs ~15 s of CPU; Debian 12's promtool has no --run)."""
    (tmp_path / "kallikratis.rules.yml").write_text(
        render("monitoring", RULES, CONTROL_VARS, **extra)
    )
    cases = yaml.safe_load((DATA / "alert_rules_test.yml").read_text())
    if only:
        cases["tests"] = [
            group
            for group in cases["tests"]
            if any(t["alertname"] == only for t in group.get("alert_rule_test", []))
        ]
        assert cases["tests"], f"no test group for {only}"
    (tmp_path / "alert_rules_test.yml").write_text(yaml.safe_dump(cases, allow_unicode=True))
    return subprocess.run(
        [PROMTOOL, "test", "rules", "alert_rules_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    path = tmp_path / "kallikratis.rules.yml"
    path.write_text(render("monitoring", RULES, CONTROL_VARS))
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_every_alert_is_tested() -> None:
    cases = (DATA / "alert_rules_test.yml").read_text()
    assert {name for name in ALERTS if f"alertname: {name}\n" in cases} == ALERTS


def test_alerts_fire_when_they_should_and_not_before(tmp_path: Path) -> None:
    proc = _promtool_test(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("variable", "value", "alert"),
    [
        ("monitoring_portal_down_for", "3m", "PortalDown"),
        ("monitoring_security_updates_max_age", "8d", "SecurityUpdatesPending"),
        ("monitoring_disk_used_percent", 75, "DiskAlmostFull"),
        ("monitoring_maintenance_max_age", "2h", "MaintenanceModeTooLong"),
        ("monitoring_restore_test_max_age_seconds", 10 * 86400, "RestoreTestTooOld"),
    ],
)
def test_the_cases_notice_a_changed_threshold(
    tmp_path: Path, variable: str, value: object, alert: str
) -> None:
    """The durations are role variables: other values than the issue's break the cases."""
    assert _promtool_test(tmp_path, only=alert).returncode == 0  # the same groups, defaults
    proc = _promtool_test(tmp_path, only=alert, **{variable: value})
    assert proc.returncode != 0
    assert f"alertname: {alert}" in proc.stdout + proc.stderr


def test_lab_durations_render(tmp_path: Path) -> None:
    """The lab shortens every duration; the rules stay valid."""
    path = tmp_path / "kallikratis.rules.yml"
    lab = {
        "monitoring_portal_down_for": "30s",
        "monitoring_target_down_for": "30s",
        "monitoring_maintenance_max_age": "90s",
        "monitoring_security_updates_max_age": "2m",
        "monitoring_reboot_pending_max_age": "1w",
    }
    text = render("monitoring", RULES, CONTROL_VARS, **lab)
    path.write_text(text)
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "> 90\n" in text and "> 120\n" in text and "> 604800\n" in text

"""`kallikratis report --publish`, `schedule report`, `scripts/record-prometheus`, and the
journaled `verify` the report's verify column reads."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import report, reportpublish, verify
from kallikratis.cli import main_group
from kallikratis.commands import common
from kallikratis.journal import Journal
from kallikratis.reportmetrics import QUERIES, RANGE_QUERIES
from kallikratis.ssh import SshTarget
from reportsupport import (
    A,
    H,
    M,
    MakeEngine,
    cli,
    code,
    running_engine,
)
from support import SLUGS, InventoryCopy, systemd_verify_units

from tests.helpers.promfixtures import PromFixtures


# -- publishing and the timer ----------------------------------------------------------------------
def test_publish_script_replaces_the_page_atomically(tmp_path: Path) -> None:
    """The script `report --publish` runs as root on control, run here by the real sh."""
    docroot = tmp_path / "kallikratis-report"
    docroot.mkdir()
    page = docroot / "index.html"
    page.write_text("old")
    script = reportpublish.publish_script(str(page))
    for text in ("<p>Δήμος ένα</p>\n", "<p>two</p>\n"):
        done = subprocess.run(["sh", "-euc", script], input=text, text=True, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert page.read_text(encoding="utf-8") == text
    assert oct(page.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in docroot.iterdir()] == ["index.html"]  # no temporary file left
    missing = reportpublish.publish_script(str(tmp_path / "nowhere" / "index.html"))
    done = subprocess.run(["sh", "-euc", missing], input="x", text=True, capture_output=True)
    assert done.returncode == 3 and "deploy the monitoring role" in done.stderr


def test_publish_without_control_vm_is_refused(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, ())
    result = cli(engine, monkeypatch, "--publish", "--json", url=prom_url)
    assert code(result) == 2 and "role control" in str(result.exception)


def test_schedule_report_units_pass_systemd_analyze_verify(
    inv: InventoryCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package systemd"
    monkeypatch.setenv("KALLIKRATIS_PROMETHEUS_URL", "http://10.42.0.250:9090")
    result = CliRunner().invoke(
        main_group,
        ["-i", str(inv.root), "schedule", "report", "--on-calendar", "hourly", "--print"],
    )
    assert result.exit_code == 0, result.output
    files = {}
    for chunk in result.output.split("# /etc/systemd/system/")[1:]:
        name, _, text = chunk.partition("\n")
        files[name] = text
    assert sorted(files) == ["kallikratis-report.service", "kallikratis-report.timer"]
    service, timer = files["kallikratis-report.service"], files["kallikratis-report.timer"]
    assert f"-i {inv.root.resolve()} report --publish" in service
    for line in (
        "Type=oneshot",
        "SuccessExitStatus=5",
        'Environment="KALLIKRATIS_PROMETHEUS_URL=http://10.42.0.250:9090"',
        "`kallikratis schedule report`",
    ):
        assert line in service
    assert "OnCalendar=hourly" in timer and "Unit=kallikratis-report.service" in timer
    proc = systemd_verify_units(tmp_path / "units", files)
    assert proc.returncode == 0, proc.stderr
    assert "kallikratis-report" not in proc.stderr, proc.stderr


def test_record_script_writes_what_the_fixture_server_serves(
    fixtures: PromFixtures, prom_url: str, tmp_path: Path
) -> None:
    """scripts/record-prometheus against a server (here the fixtures themselves): every query
    of the report is asked, stored as answered, and the map loads back to the same answers."""
    script = Path(__file__).parents[2] / "scripts" / "record-prometheus"
    done = subprocess.run(
        [sys.executable, str(script), prom_url, "--out", str(tmp_path), "--at", "1764547200"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert PromFixtures.load(tmp_path).answers == fixtures.answers
    assert sorted(set(fixtures.requests)) == sorted(
        [("query", q) for q in QUERIES.values()]
        + [("query_range", q) for q, _ in RANGE_QUERIES.values()]
    )


def test_verify_is_journaled_and_shows_in_the_report(
    inv: InventoryCopy,
    make_engine: MakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    prom_url: str,
) -> None:
    """`verify` records passed/failed per municipality; the report's verify column reads it.
    (The testinfra run itself needs VMs: here it answers fixed checks.)"""
    engine = running_engine(inv, make_engine, SLUGS)

    def checks(fleet, selection, state_dir, keyword=None, *, maintenance=False, progress=None):  # type: ignore[no-untyped-def]
        return [
            verify.Check(m.slug, name, not (m.slug == M and name == "portal"))
            for m in selection
            for name in ("ssh", "portal")
        ], 1.0

    monkeypatch.setattr(verify, "run", checks)
    monkeypatch.setattr(common.Context, "engine", property(lambda _self: engine))
    monkeypatch.setattr(common.Context, "fleet", property(lambda _self: engine.fleet))
    monkeypatch.setattr(common.Context, "declared", property(lambda _self: engine.fleet))
    result = CliRunner().invoke(main_group, ["-i", str(inv.root), "verify", "--json"])
    assert code(result) == 5, result.output
    [run] = Journal(engine.state_dir).runs()
    assert (run.command, run.status) == ("verify", "failed")
    assert {r.slug: (r.result, r.detail) for r in run.results} == {
        A: ("passed", "2/2 checks passed"),
        M: ("failed", "1/2 checks passed"),
        H: ("passed", "2/2 checks passed"),
    }
    rep = report.collect(engine, Journal(engine.state_dir), engine.fleet.tenants, prom_url)
    rows = {r.slug: r for r in rep.rows}
    assert rows[M].check("verify").state == "red" and rows[H].check("verify").state == "green"
    assert rows[H].figures["last_verify_result"] == "passed"


def test_publish_that_cannot_reach_control_fails_with_exit_1(tmp_path: Path) -> None:
    """The real ssh against a closed port on 127.0.0.1: exit 1, never 5 (the timer's unit
    counts 5, red municipalities, as success)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    key = tmp_path / "id_ed25519"
    key.write_text("")
    target = SshTarget("admin", "127.0.0.1", key, known_hosts, port=port)
    with pytest.raises(reportpublish.PublishError) as err:
        reportpublish.publish(target, "<p>x</p>")
    assert (
        err.value.exit_code == 1 and "cannot publish the report on 127.0.0.1" in err.value.message
    )

"""`kallikratis report`: the scorecard over recorded Prometheus answers served from a real HTTP
server on 127.0.0.1 (tests/helpers/promfixtures.py), libvirt's test driver and the journal.

The fixture scenario is described in tests/unit/data/prometheus/README.md.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kallikratis import model, report, reportpublish, reportrow, verify
from kallikratis.cli import main_group
from kallikratis.commands import common
from kallikratis.errors import KallikratisError
from kallikratis.journal import Journal
from kallikratis.prometheus_api import Prometheus, PrometheusError
from kallikratis.provision import Engine
from kallikratis.reportmetrics import QUERIES, RANGE_QUERIES
from support import SLUGS, InventoryCopy

from tests.helpers.hostile import HOSTILE_DISPLAY_NAME
from tests.helpers.promfixtures import PromFixtures

FIXTURES = Path(__file__).parent / "data" / "prometheus"
MakeEngine = Callable[[model.Fleet], Engine]
H, M, A = "hersonissos", "minoa-pediada", "archanes-asterousia"


def _quiet(_slug: str, _phase: str) -> None:
    pass


@pytest.fixture
def fixtures() -> PromFixtures:
    return PromFixtures.load(FIXTURES)


@pytest.fixture
def prom_url(fixtures: PromFixtures) -> Iterator[str]:
    with fixtures.serve() as url:
        yield url


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def running_engine(inv: InventoryCopy, make_engine: MakeEngine, slugs: tuple[str, ...]) -> Engine:
    inv.use_test_driver()
    engine = make_engine(inv.load())
    engine.up(engine.fleet.select(slugs), _quiet, wait=False)
    return engine


def cli(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, *args: str, url: str | None = None
) -> Result:
    """The command against *engine* (its fleet on the shared test-driver connection)."""
    monkeypatch.setattr(common.Context, "engine", property(lambda _self: engine))
    monkeypatch.setattr(common.Context, "fleet", property(lambda _self: engine.fleet))
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(engine.state_dir))
    extra = ["--prometheus", url] if url else []
    return CliRunner().invoke(
        main_group, ["-i", str(engine.fleet.inventory), "report", *args, *extra]
    )


def code(result: Result) -> int:
    """The process's exit code: `main` turns a KallikratisError into its code."""
    exc = result.exception
    return exc.exit_code if isinstance(exc, KallikratisError) else result.exit_code


# -- the Prometheus client ------------------------------------------------------------------------
def test_client_reads_vector_scalar_and_matrix(prom_url: str) -> None:
    prom = Prometheus(prom_url, timeout=5)
    up = prom.query(QUERIES["node_up"])
    assert sorted(s.labels["municipality"] for s in up) == sorted(SLUGS)
    assert {s.value for s in up} == {1.0}
    [now] = prom.query("time()")
    assert now.labels == {} and now.value == 1764547200.0
    expr, step = RANGE_QUERIES["availability_daily"]
    series = prom.query_range(expr, now.value - 30 * 86400, now.value, step)
    assert len(series) == 3 and all(len(s.points) == 31 for s in series)
    with pytest.raises(PrometheusError, match="no recorded answer"):
        prom.query("nonsense{")


def test_client_unreachable_and_bad_url() -> None:
    with pytest.raises(PrometheusError, match="cannot reach Prometheus"):
        Prometheus(closed_port_url(), timeout=2).query("up")
    with pytest.raises(PrometheusError, match="not an http"):
        Prometheus("file:///etc/passwd")


# -- the service ----------------------------------------------------------------------------------
def test_checks_flags_and_compliance(
    inv: InventoryCopy, make_engine: MakeEngine, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, ())
    fleet = engine.fleet
    rep = report.collect(engine, Journal(engine.state_dir), fleet.municipalities, prom_url)
    assert rep.warnings == ()
    rows = {r.slug: r for r in rep.rows}
    assert [r.slug for r in rep.rows] == [m.slug for m in fleet.municipalities]
    assert rows[H].overall == rows[A].overall == "green", [rows[H].checks, rows[A].checks]
    red = {c.name for c in rows[M].checks if c.state == "red"}
    assert red == {"portal", "availability", "security", "stack"}
    assert rows[M].check("portal").detail == "down: portal, site"
    assert "10.0 days" in rows[M].check("security").detail
    assert rows[M].check("stack").detail == "wordpress 6.8.2 < 6.8.3"
    assert rows[A].check("reboot").state == "green"  # required for 2 days: under the limit
    assert rows[H].flags == ()
    assert rows[A].flags == ("no-news-90d",)  # last post 120 days before the recording
    assert rows[M].flags == ("no-news-90d", "no-consultation")
    s = rep.summary
    assert (s.total, s.green, s.red, s.unknown, s.compliance_pct) == (3, 2, 1, 0, 66.7)
    assert s.flagged == {"no-news-90d": 2, "no-consultation": 1}
    assert rep.current_stack == {"wordpress": "6.8.3", "datasette": "0.65.1", "kolibri": "0.18.1"}
    assert rows[H].use["learners"] == 38 and rows[A].use["learners"] is None
    assert rows[M].figures["alerts"] == ["PortalDown", "SecurityUpdatesPending"]
    assert rep.failing == [M]


def test_absent_vm_and_old_image_are_red(
    inv: InventoryCopy, make_engine: MakeEngine, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, (H,))
    rep = report.collect(engine, Journal(engine.state_dir), engine.fleet.municipalities, prom_url)
    rows = {r.slug: r for r in rep.rows}
    assert rows[H].overall == "green"
    absent = rows[A]
    assert (absent.check("state").state, absent.check("drift").detail) == ("red", "not created")
    # no VM: the image comes from the VM's own report, an older image than the recipe's
    assert absent.check("image").state == "red" and "outdated-image" in absent.flags


def test_one_refused_query_makes_one_column_unknown(
    inv: InventoryCopy, make_engine: MakeEngine, fixtures: PromFixtures
) -> None:
    engine = running_engine(inv, make_engine, ())
    del fixtures.answers["query"][QUERIES["tls_days"]]
    with fixtures.serve() as url:
        rep = report.collect(engine, Journal(engine.state_dir), engine.fleet.municipalities, url)
    [warning] = rep.warnings
    assert "tls_days" in warning and "no recorded answer" in warning
    row = next(r for r in rep.rows if r.slug == H)
    assert row.check("tls").state == "unknown" and row.figures["tls_days"] is None
    assert row.overall == "unknown" and row.check("availability").state == "green"


def test_last_patch_and_verify_from_the_journal(
    inv: InventoryCopy, make_engine: MakeEngine, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, ())
    journal = Journal(engine.state_dir)
    with journal.run("patch", ["kallikratis", "patch", "--all"], None, SLUGS) as record:
        for slug in SLUGS:
            record.result(slug, "patched")
    failing = journal.start("patch", ["kallikratis", "patch", H], None, [H])
    failing.result(H, "failed", "verify: portal down")
    journal.finish(failing, "failed", 5, "patch failed on: hersonissos")
    with journal.run("onboard", ["kallikratis", "onboard", A], None, [A]) as record:
        record.result(A, "failed", "verify")
    rep = report.collect(engine, journal, engine.fleet.municipalities, prom_url)
    rows = {r.slug: r for r in rep.rows}
    assert rows[H].figures["last_patch_result"] == "failed"
    assert rows[H].check("patch").state == "red" and rows[H].overall == "red"
    assert rows[M].figures["last_patch_result"] == "patched"
    assert rows[A].check("verify").state == "red"
    assert rows[M].check("verify").detail == "never"
    assert set(rep.failing) == {H, M, A}


def test_version_order() -> None:
    key = reportrow.version_key
    assert key("0.19.2") > key("0.9.10") and key("6.8.3") > key("6.8") > key("6.7.10")


# -- the command ----------------------------------------------------------------------------------
def test_unreachable_prometheus_still_reports_and_exits_by_what_it_read(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = running_engine(inv, make_engine, SLUGS)
    url = closed_port_url()
    result = cli(engine, monkeypatch, "--json", url=url)
    assert result.exit_code == 0, result.output  # all it could read (libvirt, journal) is green
    data = json.loads(result.stdout)
    assert data["summary"]["prometheus"].startswith("unreachable")
    assert data["summary"]["unknown"] == 3 and data["summary"]["compliance_pct"] == 0.0
    row = data["municipalities"][0]
    assert row["checks"]["state"]["state"] == "green"
    assert row["checks"]["tls"]["state"] == "unknown" and row["availability_30d"] is None
    assert "warning: Prometheus" in result.stderr and "cannot reach" in result.stderr
    # one VM stopped: that is read, it is red, the exit code says so
    engine.backend("hv01").conn.lookupByName(f"crete-{M}").destroy()
    stopped = cli(engine, monkeypatch, url=url)
    assert code(stopped) == 5 and M in str(stopped.exception)


def test_json_and_csv(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, SLUGS)
    as_json = cli(engine, monkeypatch, "--json", url=prom_url)
    assert code(as_json) == 5 and f"red check: {M}" in str(as_json.exception)
    data = json.loads(as_json.stdout)
    assert set(data) == {
        "fleet", "generated", "current_image", "current_stack", "summary", "warnings",
        "municipalities",
    }  # fmt: skip
    assert data["summary"]["compliance_pct"] == 66.7
    row = {r["slug"]: r for r in data["municipalities"]}[H]
    assert row["display_name"] == "Δήμος Χερσονήσου" and row["overall"] == "green"
    assert set(row["checks"]) == {
        "state", "drift", "node", "portal", "availability", "tls", "security", "reboot",
        "maintenance", "disk", "image", "stack", "patch", "verify",
    }  # fmt: skip
    assert row["use"]["dataset_rows"] == 12873 and row["versions"]["kolibri"] == "0.18.1"
    as_csv = cli(engine, monkeypatch, "--csv", url=prom_url)
    lines = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["slug"] for r in lines] == [m.slug for m in engine.fleet.municipalities]
    minoa = next(r for r in lines if r["slug"] == M)
    assert minoa["red_checks"] == "portal availability security stack"
    assert minoa["flags"] == "no-news-90d no-consultation" and minoa["posts"] == "0.0"
    both = cli(engine, monkeypatch, "--json", "--csv", url=prom_url)
    assert code(both) == 2 and "not both" in str(both.exception)


def test_names_select_and_unknown_names_are_refused(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, SLUGS)
    one = cli(engine, monkeypatch, H, "--json", url=prom_url)
    assert one.exit_code == 0, one.output
    assert [r["slug"] for r in json.loads(one.stdout)["municipalities"]] == [H]
    bad = cli(engine, monkeypatch, "atlantis", url=prom_url)
    assert code(bad) == 2 and "atlantis" in str(bad.exception)


def test_html_is_self_contained_and_escaped(
    inv: InventoryCopy,
    make_engine: MakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    prom_url: str,
    tmp_path: Path,
) -> None:
    hostile = HOSTILE_DISPLAY_NAME + ' <script>alert(1)</script><img src="http://evil.example/x">'
    inv.set_host(H, display_name=hostile)
    engine = running_engine(inv, make_engine, SLUGS)
    page = tmp_path / "scorecard.html"
    result = cli(engine, monkeypatch, "--html", str(page), url=prom_url)
    assert code(result) == 5, result.output
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Δήμος Μινώα Πεδιάδας" in html  # Greek as UTF-8 text
    # no request to any other host: no src/href/url() at all except in-page ones
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import|<link|<iframe", html, re.I)
    # the three charts, drawn by matplotlib as inline SVG (text as paths: no font needed)
    assert html.count("<svg") == 3 and "<!--" not in html


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
    units = tmp_path / "units"
    units.mkdir()
    for name, text in files.items():
        (units / name).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / n) for n in sorted(files))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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
    rep = report.collect(engine, Journal(engine.state_dir), engine.fleet.municipalities, prom_url)
    rows = {r.slug: r for r in rep.rows}
    assert rows[M].check("verify").state == "red" and rows[H].check("verify").state == "green"
    assert rows[H].figures["last_verify_result"] == "passed"

"""`kallikratis report`: the scorecard over recorded Prometheus answers served from a real HTTP
server on 127.0.0.1 (tests/helpers/promfixtures.py), libvirt's test driver and the journal.

The fixture scenario is described in tests/unit/data/prometheus/README.md.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import report, reportrow
from kallikratis.cli import main_group
from kallikratis.journal import Journal
from kallikratis.prometheus_api import Prometheus, PrometheusError
from kallikratis.reportmetrics import QUERIES, RANGE_QUERIES
from reportsupport import (
    A,
    H,
    M,
    MakeEngine,
    cli,
    closed_port_url,
    code,
    running_engine,
)
from support import SLUGS, InventoryCopy

from tests.helpers.hostile import HOSTILE_DISPLAY_NAME
from tests.helpers.promfixtures import PromFixtures


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
    rep = report.collect(engine, Journal(engine.state_dir), fleet.tenants, prom_url)
    assert rep.warnings == ()
    rows = {r.slug: r for r in rep.rows}
    assert [r.slug for r in rep.rows] == [m.slug for m in fleet.tenants]
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
    rep = report.collect(engine, Journal(engine.state_dir), engine.fleet.tenants, prom_url)
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
        rep = report.collect(engine, Journal(engine.state_dir), engine.fleet.tenants, url)
    [warning] = rep.warnings
    assert "tls_days" in warning and "no recorded answer" in warning
    assert rep.summary.prometheus == "partial: 1 queries failed"
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
    rep = report.collect(engine, journal, engine.fleet.tenants, prom_url)
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
    assert row["green"] is True and row["updates_pending"] == 2
    assert row["security_updates_pending"] == 0
    assert set(row["checks"]) == {
        "state", "drift", "node", "portal", "availability", "tls", "security", "reboot",
        "maintenance", "disk", "image", "stack", "patch", "verify",
    }  # fmt: skip
    assert row["use"]["dataset_rows"] == 12873 and row["versions"]["kolibri"] == "0.18.1"
    as_csv = cli(engine, monkeypatch, "--csv", url=prom_url)
    lines = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["slug"] for r in lines] == [m.slug for m in engine.fleet.tenants]
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


def test_unreachable_libvirt_leaves_state_unknown(
    inv: InventoryCopy, prom_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hypervisor: the state and drift columns are unknown and stderr says why; the rest
    still comes from Prometheus (the image version too: the VM's own report of it)."""
    inv.set_hypervisor(libvirt_uri=f"test://{tmp_path}/no-such-node.xml")
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(tmp_path / "state"))
    args = ["-i", str(inv.root), "report", H, "--json", "--prometheus", prom_url]
    result = CliRunner().invoke(main_group, args)
    [row] = json.loads(result.stdout)["municipalities"]
    assert (row["state"], row["checks"]["state"]["state"]) == ("unknown", "unknown")
    assert row["checks"]["drift"]["state"] == "unknown"
    assert row["checks"]["portal"]["state"] == "green"
    # the recorded image version is not the recipe's: that one is read, and red
    assert [c for c, v in row["checks"].items() if v["state"] == "red"] == ["image"]
    assert row["image"] == "5f0c2d9a1b7e" and code(result) == 5
    assert "warning: libvirt" in result.stderr and "VM state unknown" in result.stderr


def test_central_vms_are_not_rows_and_control_is_the_default_prometheus(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, prom_url: str
) -> None:
    inv.add_central()
    engine = running_engine(inv, make_engine, (*SLUGS, "control"))
    control = engine.fleet.control
    assert control is not None
    monkeypatch.delenv(report.PROMETHEUS_URL_ENV, raising=False)
    assert report.prometheus_url(engine.fleet) == f"http://{control.ip}:9090"
    monkeypatch.setenv(report.PROMETHEUS_URL_ENV, "http://10.0.0.9:9090")
    assert report.prometheus_url(engine.fleet) == "http://10.0.0.9:9090"
    assert report.prometheus_url(engine.fleet, prom_url) == prom_url  # --prometheus first
    result = cli(engine, monkeypatch, "--json", url=prom_url)
    rows = [r["slug"] for r in json.loads(result.stdout)["municipalities"]]
    assert rows == [m.slug for m in engine.fleet.tenants] and "control" not in rows
    refused = cli(engine, monkeypatch, "control", url=prom_url)
    assert code(refused) == 2 and "unknown municipality: control" in str(refused.exception)


def test_unreadable_journal_leaves_patch_and_verify_unknown(
    inv: InventoryCopy, make_engine: MakeEngine, prom_url: str
) -> None:
    engine = running_engine(inv, make_engine, ())
    journal = Journal(engine.state_dir)
    journal.path.parent.mkdir(parents=True, exist_ok=True)
    journal.path.write_bytes(b"not a database, " * 64)
    rep = report.collect(engine, journal, engine.fleet.tenants, prom_url)
    [warning] = rep.warnings
    assert warning.startswith("journal: cannot open the journal") and "unknown" in warning
    row = next(r for r in rep.rows if r.slug == H)
    assert row.check("patch").state == row.check("verify").state == "unknown"
    assert row.overall == "unknown" and rep.summary.red == 1  # minoa-pediada: red as before

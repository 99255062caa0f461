"""`report` over Prometheus answers recorded from the real lab (tests/unit/data/prometheus-lab/,
written by the e2e monitoring module with scripts/record-prometheus): the state at the end of
that module, hersonissos' nginx stopped (PortalDown firing for each of its probes) and a
package update pending on archanes-asterousia. The hand-made scenario of test_report.py covers
what a short lab run cannot show (30 days of history, old security updates, lagging versions).
"""

from __future__ import annotations

from pathlib import Path

from kallikratis import report
from kallikratis.journal import Journal
from reportsupport import A, H, MakeEngine, running_engine
from support import InventoryCopy

from tests.helpers.promfixtures import PromFixtures

LAB = Path(__file__).parent / "data" / "prometheus-lab"


def test_the_lab_recording_reads_as_the_lab_was(
    inv: InventoryCopy, make_engine: MakeEngine
) -> None:
    engine = running_engine(inv, make_engine, ())
    chosen = [m for m in engine.fleet.tenants if m.slug in (A, H)]
    with PromFixtures.load(LAB).serve() as url:
        rep = report.collect(engine, Journal(engine.state_dir), chosen, url)
    assert rep.warnings == () and rep.summary.prometheus == "ok"
    rows = {r.slug: r for r in rep.rows}
    assert list(rows) == [A, H]  # control was recorded too, and is never a row
    down, up = rows[H], rows[A]
    assert down.check("portal").state == "red"
    assert down.check("portal").detail == "down: education, opendata, portal, site"
    assert down.figures["alerts"] == ["PortalDown"]
    assert (down.check("tls").state, down.check("tls").detail) == ("unknown", "no data")
    assert up.check("portal").state == "green" and up.figures["alerts"] == []
    assert up.figures["updates_pending"] == 1 and up.figures["security_updates_pending"] == 0
    assert up.check("tls").state == "green" and up.figures["tls_days"] == 397.0
    # the lab's first deploy counts as downtime: both are below 99 % over "30 days"
    assert (up.figures["availability_30d"], down.figures["availability_30d"]) == (0.9091, 0.7)
    assert up.use["posts"] == 2 and down.use["posts"] == 1  # the module wrote one on archanes
    assert down.use["learners"] == 0 and up.use["learners"] is None  # no e-learning there
    assert down.figures["versions"] == {
        "datasette": "0.65.5",
        "kolibri": "0.19.5",
        "wordpress": "6.8.12",
    }
    assert (rep.summary.total, rep.summary.red, rep.summary.compliance_pct) == (2, 2, 0.0)

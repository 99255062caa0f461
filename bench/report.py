"""Report benchmark (prints figures; not a test): `kallikratis report` over 332 municipalities.

A throw-away copy of inventories/crete grown to 332 municipalities (the Kallikratis
municipalities of Greece) on a libvirt test-driver node (no VM, no libvirtd: the VMs read as
absent), a journal holding one patch run of all of them, and the recorded Prometheus answers
(tests/unit/data/prometheus/) scaled up to 332 municipalities and served from 127.0.0.1.
Side by side, median of --runs runs, each a fresh `kallikratis` process:

  baseline  `status --json`, the fleet read that needs no Prometheus
  table     `report`: libvirt + journal + 26 Prometheus queries, the rich table
  json      `report --json`: the same as JSON
  html      `report --html FILE`: the same plus the page and its three charts
  phases    in one process: collect (libvirt, journal, Prometheus) and the page alone

Target (issue #10): `report` over 332 municipalities <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "cli"))
sys.path.insert(0, str(ROOT))
from benchlib import row  # noqa: E402
from kallikratis import inventory, report, reporthtml  # noqa: E402
from kallikratis.journal import Journal  # noqa: E402
from kallikratis.provision import Engine  # noqa: E402

from tests.helpers.promfixtures import PromFixtures  # noqa: E402

COUNT = 332
TARGET_S = 2.0


def make_inventory(root: Path) -> Path:
    inv = root / "inventory"
    shutil.copytree(ROOT / "inventories" / "crete", inv, ignore=shutil.ignore_patterns("vault.yml"))
    fleet_file = inv / "group_vars" / "all" / "fleet.yml"
    fleet = yaml.safe_load(fleet_file.read_text())
    fleet["fleet_network"].update(cidr="10.96.0.0/22", gateway="10.96.0.1", dns=["10.96.0.1"])
    fleet_file.write_text(yaml.safe_dump(fleet, allow_unicode=True))
    hosts_file = inv / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    node = root / "node.xml"
    node.write_text("<node/>\n")
    hosts["all"]["children"]["hypervisors"]["hosts"]["hv01"]["libvirt_uri"] = f"test://{node}"
    muni = hosts["all"]["children"]["municipalities"]["hosts"]
    for i in range(COUNT - len(muni)):
        muni[f"dimos-{i:03d}"] = {"display_name": f"Δήμος {i:03d}", "modules": ["portal"]}
    hosts_file.write_text(yaml.safe_dump(hosts, allow_unicode=True))
    return inv


def timed(env: dict[str, str], inv: Path, *args: str) -> float:
    argv = [sys.executable, "-m", "kallikratis.cli", "-i", str(inv), *args]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if done.returncode not in (0, 5):  # 5: some municipality red, the report's finding
        raise SystemExit(f"kallikratis {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep-html", type=Path, help="copy the 332-row page here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kk-bench-report-"))
    try:
        inv = make_inventory(root)
        state = root / "state"
        fleet = inventory.load(inv)
        slugs = [m.slug for m in fleet.tenants]
        with Journal(state).run("patch", ["kallikratis", "patch", "--all"], inv, slugs) as rec:
            for slug in slugs:
                rec.result(slug, "patched", "", 60.0)
        page = root / "scorecard.html"
        recorded = PromFixtures.load(ROOT / "tests" / "unit" / "data" / "prometheus")
        fixtures = recorded.scaled(COUNT, slugs)
        env = dict(os.environ, KALLIKRATIS_STATE_DIR=str(state), PYTHONPATH=str(ROOT / "cli"))
        with fixtures.serve() as url:
            env["KALLIKRATIS_PROMETHEUS_URL"] = url
            figures = {
                "status --json": [timed(env, inv, "status", "--json") for _ in range(args.runs)],
                "report (table)": [timed(env, inv, "report") for _ in range(args.runs)],
                "report --json": [timed(env, inv, "report", "--json") for _ in range(args.runs)],
                "report --html": [
                    timed(env, inv, "report", "--html", str(page)) for _ in range(args.runs)
                ],
            }
            engine = Engine(fleet, state_dir=state)
            start = time.monotonic()
            rep = report.collect(engine, Journal(state), fleet.tenants, url)
            collect_s = time.monotonic() - start
            start = time.monotonic()
            html = reporthtml.page(rep)
            page_s = time.monotonic() - start
        load = os.getloadavg()[0]
        print(
            f"kallikratis bench/report ({COUNT} municipalities, median of {args.runs}, "
            f"{os.cpu_count()} CPUs, load average {load:.1f})"
        )
        print(f"{'':48}{'seconds':>13} {'vs baseline':>13}")
        base = statistics.median(figures["status --json"])
        for label, runs in figures.items():
            median = statistics.median(runs)
            row(f"`{label}` (process)", f"{median:.2f}", f"{median / base:.1f} x")
        row("collect in one process (26 queries)", f"{collect_s:.2f}")
        row(f"page in one process ({len(html) // 1024} KiB, 3 charts)", f"{page_s:.2f}")
        for label in ("report (table)", "report --json", "report --html"):
            median = statistics.median(figures[label])
            verdict = "met" if median <= TARGET_S else "MISSED"
            print(f"target: `{label}` <= {TARGET_S:.0f} s over {COUNT}: {verdict} ({median:.2f} s)")
        print(f"rows: {rep.summary.total}, compliance {rep.summary.compliance_pct} %")
        if args.keep_html:
            shutil.copyfile(page, args.keep_html)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

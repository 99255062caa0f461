"""Monitoring benchmark (prints figures; not a test): what the monitoring costs, measured on a
running lab fleet, and what Prometheus' series count projects to for 332 municipalities.

Run inside the lab once `scripts/lab up` has deployed the fleet (the longer it has run, the
closer Prometheus' figures are to steady state; issue #10 asks for one hour):

    scripts/lab run -- .venv/bin/python bench/monitoring.py [--inventory inventories/crete]

`--window 10` adds Prometheus' CPU over the next 10 minutes (steady state, without start-up).

Side by side, in one run:
  control     Prometheus' resident memory, its CPU seconds per hour since it started, and the
              series it holds per municipality; projected linearly to 332 municipalities
  per VM      the collectors' CPU seconds per run (systemd accounting of the last run of
              kallikratis-metrics.service) x 12 runs an hour, and their peak memory, next to
              the node exporter's own CPU seconds per hour (the baseline every VM already pays)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import row  # noqa: E402

MUNICIPALITIES_OF_GREECE = 332
RUNS_PER_HOUR = 12  # kallikratis-metrics.timer: every 5 minutes


def kk(inventory: str, *args: str) -> str:
    argv = [str(ROOT / ".venv" / "bin" / "kallikratis"), "-i", inventory, *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout


def ssh(inventory: str, slug: str, command: str) -> str:
    return kk(inventory, "ssh", slug, "--", command)


def query(prometheus: str, promql: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=30) as res:  # noqa: S310 - the lab's control VM
        return list(json.load(res)["data"]["result"])


def process_figures(inventory: str, slug: str, process: str) -> tuple[float, float, float]:
    """(RSS MiB, CPU seconds, seconds since start) of *process* on *slug*."""
    out = ssh(inventory, slug, f"ps -o rss=,times=,etimes= -C {process} | head -1").split()
    rss_kib, cpu_s, age_s = (float(x) for x in out[:3])
    return rss_kib / 1024, cpu_s, age_s


def unit_figures(inventory: str, slug: str, unit: str) -> tuple[float, float]:
    """(CPU seconds, peak memory MiB) of *unit*'s last run."""
    # KEY=value, not --value: systemd prints properties in its own order, not the -p order
    out = ssh(inventory, slug, f"systemctl show -p CPUUsageNSec -p MemoryPeak {unit}")
    props = dict(line.strip().split("=", 1) for line in out.splitlines() if "=" in line)
    cpu_ns, peak = props.get("CPUUsageNSec", ""), props.get("MemoryPeak", "")
    cpu = int(cpu_ns) / 1e9 if cpu_ns.isdigit() else float("nan")
    mem = int(peak) / 2**20 if peak.isdigit() else float("nan")
    return cpu, mem


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "crete"))
    parser.add_argument(
        "--window",
        type=float,
        default=0.0,
        metavar="MIN",
        help="also Prometheus' CPU over a window of MIN minutes from now (steady state: the "
        "average since start includes its start-up and the fleet's first deploy)",
    )
    args = parser.parse_args()
    inv = args.inventory
    status = json.loads(kk(inv, "status", "--json"))["municipalities"]
    central = [r for r in status if r.get("central_roles")]
    tenants = [r for r in status if not r.get("central_roles") and r["state"] == "running"]
    if not central or not tenants:
        print("needs a running lab fleet with a control VM: scripts/lab up", file=sys.stderr)
        return 2
    control = central[0]
    prometheus = f"http://{control['ip']}:9090"
    series = {
        r["metric"]["municipality"]: float(r["value"][1])
        for r in query(prometheus, 'count by (municipality) ({municipality!=""})')
    }
    per_vm = [series[t["slug"]] for t in tenants if t["slug"] in series]
    mean_series = sum(per_vm) / len(per_vm)
    rss, cpu, age = process_figures(inv, control["slug"], "prometheus")
    print(f"control: Prometheus up {age / 60:.0f} min, {len(per_vm)} municipalities scraped")
    row(
        "Prometheus RSS (MiB)",
        f"{rss:.0f}",
        f"x{MUNICIPALITIES_OF_GREECE}/{len(per_vm)}: "
        f"{rss * MUNICIPALITIES_OF_GREECE / len(per_vm):.0f} (linear, an upper bound)",
    )
    row("Prometheus CPU s/hour", f"{cpu / age * 3600:.1f}", "since it started")
    if args.window > 0:
        time.sleep(args.window * 60)
        rss2, cpu2, age2 = process_figures(inv, control["slug"], "prometheus")
        row(
            "Prometheus CPU s/hour, window",
            f"{(cpu2 - cpu) / (age2 - age) * 3600:.1f}",
            f"min {age / 60:.0f}-{age2 / 60:.0f} (RSS then {rss2:.0f} MiB)",
        )
    row(
        "series per municipality",
        f"{mean_series:.0f}",
        f"x{MUNICIPALITIES_OF_GREECE}: {mean_series * MUNICIPALITIES_OF_GREECE:.0f} series",
    )
    slug = tenants[0]["slug"]
    collectors_cpu, collectors_mem = unit_figures(inv, slug, "kallikratis-metrics.service")
    _, exporter_cpu, exporter_age = process_figures(inv, slug, "prometheus-node-exporter")
    print(f"\nper municipality VM ({slug}):")
    row("node exporter CPU s/hour (baseline)", f"{exporter_cpu / exporter_age * 3600:.1f}", "")
    row(
        "collectors CPU s/hour",
        f"{collectors_cpu * RUNS_PER_HOUR:.1f}",
        f"{collectors_cpu:.2f} s per run x {RUNS_PER_HOUR}",
    )
    row("collectors peak memory (MiB)", f"{collectors_mem:.0f}", "one run, then gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())

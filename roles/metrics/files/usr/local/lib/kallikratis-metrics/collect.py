#!/usr/bin/python3
"""kallikratis-metrics: write the VM's textfile metrics for node exporter.

usage: collect.py [--config FILE] COLLECTOR [COLLECTOR ...]
COLLECTOR: updates, maintenance, versions, requests, portal, opendata, education.

Each collector writes <textfile_dir>/kallikratis_<collector>.prom atomically, with
kallikratis_collector_success{collector} and kallikratis_collector_last_run_timestamp_seconds;
a failed collector writes only those two (success 0) and its error goes to the journal. A
module collector for a module that is off removes its file: it writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import system  # noqa: E402
import textfile  # noqa: E402
import usage  # noqa: E402

FAMILIES = {
    **system.FAMILIES,
    **usage.FAMILIES,
    "kallikratis_collector_success": ("gauge", "1 if the collector's last run succeeded."),
    "kallikratis_collector_last_run_timestamp_seconds": ("gauge", "When the collector last ran."),
}
MODULE_COLLECTORS = ("portal", "opendata", "education")
COLLECTORS = ("updates", "maintenance", "versions", "requests", *MODULE_COLLECTORS)


def _stateful(cfg: dict, name: str, fn: Callable[[dict], list]) -> list:
    path = Path(cfg["state_dir"]) / f"{name}.json"
    state = textfile.load_state(path)
    samples = fn(state)
    textfile.save_state(path, state)
    return samples


def gather(name: str, cfg: dict, now: float) -> list:
    modules = set(cfg["modules"])
    if name == "updates":
        text = system.simulate_upgrade()
        reboot = Path(cfg["reboot_required_flag"])
        return _stateful(cfg, name, lambda st: system.updates(text, st, now, reboot))
    if name == "maintenance":
        return system.maintenance(Path(cfg["maintenance_flag"]))
    if name == "versions":
        return system.versions(cfg)
    if name == "requests":
        log = Path(cfg["nginx_access_log"])
        return _stateful(cfg, name, lambda st: usage.requests(log, modules, st))
    if name == "portal":
        return usage.portal(usage.mariadb_query(cfg["portal_database"]), cfg["portal_table_prefix"])
    if name == "opendata":
        return usage.opendata(Path(cfg["opendata_database"]))
    if name == "education":
        return usage.education(Path(cfg["education_database"]))
    raise ValueError(f"unknown collector {name!r}")


def run(name: str, cfg: dict, now: float) -> bool:
    """Collect NAME and write its file; True when it succeeded (or had nothing to do)."""
    target = Path(cfg["textfile_dir"]) / f"kallikratis_{name}.prom"
    if name in MODULE_COLLECTORS and name not in cfg["modules"]:
        target.unlink(missing_ok=True)
        return True
    ok = True
    try:
        samples = gather(name, cfg, now)
    except Exception:  # noqa: BLE001 - any failure is reported as collector_success 0
        traceback.print_exc(file=sys.stderr)
        samples, ok = [], False
    samples += [
        ("kallikratis_collector_success", {"collector": name}, 1 if ok else 0),
        ("kallikratis_collector_last_run_timestamp_seconds", {"collector": name}, int(now)),
    ]
    textfile.write_atomic(target, textfile.render(FAMILIES, samples))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/kallikratis/metrics.json", type=Path)
    parser.add_argument("collectors", nargs="+", choices=COLLECTORS)
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    now = time.time()
    results = [run(name, cfg, now) for name in args.collectors]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

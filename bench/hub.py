"""Hub benchmark (prints figures; not a test): the harvester over 332 municipality portals.

Loopback stand-ins (tests/helpers/portalstandin.py: the recorded WordPress REST and Datasette
answers of tests/unit/data/hub) for COUNT municipalities, each with its news posts, its
consultations and TABLES Datasette tables, served by one threaded HTTP server on 127.0.0.1.
The harvester runs in this process exactly as on the hub VM (kallikratis_hub.harvest.run):

  full         the first harvest: every record fetched, every output written
  incremental  the next one, nothing changed: listings only (target: <= 60 s for 332)
  edits        after one post edited on every tenth portal, one portal down
  catalog      the DCAT-AP catalog alone for COUNT x TABLES datasets, three serialisations
               (paged by --page-size, like the hub's default of 1000)

No VM and no network beyond loopback; bounded by the harvester's own limits.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "roles/hub/files/usr/lib/kallikratis-hub"))
sys.path.insert(0, str(ROOT))
from benchlib import row  # noqa: E402
from kallikratis_hub import dcat, harvest, views  # noqa: E402
from kallikratis_hub.store import connect  # noqa: E402

from tests.helpers.loopback import http_server  # noqa: E402
from tests.helpers.portalstandin import Portal, Region  # noqa: E402

COUNT = 332
TABLES = 10
TARGET_INCREMENTAL_S = 60.0
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def portal(tables: int) -> Portal:
    p = Portal()
    first = p.database["tables"][0]
    p.database["tables"] = [{**first, "name": f"table_{i:02d}"} for i in range(tables)]
    return p


def config(tmp: Path, base: str, slugs: list[str], workers: int, page_size: int) -> Path:
    path = tmp / "hub.json"
    raw = {
        "hub_url": "https://hub.crete.kallikratis.test/",
        "title": "Κόμβος διαλειτουργικότητας",
        "description": "Νέα, διαβουλεύσεις και ανοικτά δεδομένα των δήμων.",
        "publisher": "Περιφερειακό κέντρο δεδομένων",
        "state_dir": str(tmp / "state"),
        "public_dir": str(tmp / "public"),
        "workers": workers,
        "catalog_page_size": page_size,
        "limits": {"timeout_s": 10, "budget_s": 60},
        "portals": [
            {
                "slug": s,
                "name": f"Δήμος {s}",
                "url": f"{base}/{s}/",
                "modules": ["portal", "opendata"],
            }
            for s in slugs
        ],
    }
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


def timed_run(cfg: harvest.Config) -> tuple[float, list[harvest.Outcome]]:
    start = time.monotonic()
    outcomes = harvest.run(cfg, NOW)
    return time.monotonic() - start, outcomes


def summary(outcomes: list) -> str:
    stale = sum(o.stale for o in outcomes)
    requests = sum(o.requests for o in outcomes)
    return f"{requests} req, {stale} stale"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--tables", type=int, default=TABLES)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    slugs = [f"dimos-{i:03d}" for i in range(args.count)]
    region = Region()
    for slug in slugs:
        region.portals[slug] = portal(args.tables)
    with tempfile.TemporaryDirectory() as tmp_name, http_server(region.handler()) as base:
        tmp = Path(tmp_name)
        cfg = harvest.Config.load(config(tmp, base, slugs, args.workers, args.page_size))
        print(f"hub harvest: {args.count} portals x {args.tables} tables, {args.workers} workers")
        row("run", "seconds", "new", "changed", "removed", "detail")
        took, out = timed_run(cfg)
        row("full", f"{took:.1f}", *_counts(out), summary(out))
        incremental, out = timed_run(cfg)
        row("incremental (no change)", f"{incremental:.1f}", *_counts(out), summary(out))
        for i, slug in enumerate(slugs):
            if i % 10 == 0:
                p = region.portals[slug]
                p.posts[0] = {
                    **p.posts[0],
                    "modified_gmt": "2026-11-30T09:00:00",
                    "title": {"rendered": "Νέος τίτλος"},
                }
        region.portals[slugs[-1]].mode = "500"
        took, out = timed_run(cfg)
        row("incremental (1/10 edited, 1 down)", f"{took:.1f}", *_counts(out), summary(out))
        conn = connect(cfg.state_dir / "hub.db")
        datasets = views.datasets(conn)
        start = time.monotonic()
        files = list(dcat.serialize(cfg, datasets, NOW))
        took = time.monotonic() - start
        size = sum(len(data) for _, data in files) / 1e6
        row(
            f"catalog of {len(datasets)} datasets",
            f"{took:.1f}",
            "",
            "",
            "",
            f"{len(files)} files, {size:.1f} MB",
        )
        verdict = "met" if incremental <= TARGET_INCREMENTAL_S else "MISSED"
        print(f"target: incremental harvest <= {TARGET_INCREMENTAL_S:.0f} s: {verdict}")


def _counts(outcomes: list) -> tuple[int, int, int]:
    return (
        sum(o.new for o in outcomes),
        sum(o.changed for o in outcomes),
        sum(o.removed for o in outcomes),
    )


if __name__ == "__main__":
    main()

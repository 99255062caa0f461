"""python3 -m kallikratis_hub harvest|serve-search --config /etc/kallikratis-hub/hub.json"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kallikratis_hub.model import ConfigError

DEFAULT_CONFIG = Path("/etc/kallikratis-hub/hub.json")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kallikratis-hub")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("harvest", help="harvest every portal now and rewrite the outputs")
    h.add_argument("--json", action="store_true", help="print the per-municipality report as JSON")
    s = sub.add_parser("serve-search", help="serve GET /search on a loopback address")
    s.add_argument("--listen", default="127.0.0.1:8091", metavar="HOST:PORT")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from kallikratis_hub import harvest

    try:
        cfg = harvest.Config.load(args.config)
        if args.command == "serve-search":
            from kallikratis_hub import search

            host, _, port = args.listen.rpartition(":")
            site = {"title": cfg.title, "hub_url": cfg.hub_url}
            search.serve(search.SearchApp(cfg.state_dir / "public.db", site), host, int(port))
            return 0
        outcomes = harvest.run(cfg)
    except ConfigError as exc:
        print(f"kallikratis-hub: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([o.as_dict() for o in outcomes], ensure_ascii=False, indent=1))
    else:
        for o in outcomes:
            state = f"STALE ({o.error})" if o.stale else "ok"
            print(f"{o.slug}: new {o.new}, changed {o.changed}, removed {o.removed}, {state}")
    return 0

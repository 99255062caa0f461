"""Shared set-up of the hub tests: the role's harvester package on sys.path, a region of
portal stand-ins on loopback and the hub configuration pointing at them."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

LIB = Path(__file__).resolve().parents[2] / "roles/hub/files/usr/lib/kallikratis-hub"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

# the role copies this tree to the VM as it is: no __pycache__ from the tests in it
_write_bytecode = sys.dont_write_bytecode
sys.dont_write_bytecode = True
try:
    import kallikratis_hub.cli  # noqa: E402, F401
    import kallikratis_hub.outputs  # noqa: E402, F401
    import kallikratis_hub.search  # noqa: E402, F401
    from kallikratis_hub.harvest import Config  # noqa: E402
finally:
    sys.dont_write_bytecode = _write_bytecode

DCAT_AP = Path(__file__).resolve().parent / "data/hub/dcat-ap"
#: DCAT-AP 2.1.1: the class and property constraints, and the range constraints
SHAPES = (DCAT_AP / "dcat-ap_2.1.1_shacl_shapes.ttl", DCAT_AP / "dcat-ap_2.1.1_shacl_range.ttl")


def closed_port() -> int:
    """A loopback port nobody listens on (a municipality that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, base: str, slugs: list[str], **extra: Any) -> Config:
    """hub.json as the role writes it, every portal at BASE/<slug>/ (or its own URL in URLS)."""
    urls: dict[str, str] = extra.pop("urls", {})
    portals = [
        {
            "slug": slug,
            "name": f"Δήμος {slug.capitalize()}",
            "url": urls.get(slug, f"{base}/{slug}/"),
            "modules": extra.get("modules", ["portal", "opendata"]),
        }
        for slug in slugs
    ]
    raw = {
        "hub_url": "https://hub.crete.example/",
        "title": "Κόμβος διαλειτουργικότητας Κρήτης",
        "description": "Νέα, διαβουλεύσεις και ανοικτά δεδομένα όλων των δήμων της Κρήτης.",
        "publisher": "Περιφερειακό κέντρο δεδομένων Κρήτης",
        "state_dir": str(tmp / "state"),
        "public_dir": str(tmp / "public"),
        "limits": extra.get("limits", {"timeout_s": 1.0, "budget_s": 10, "max_bytes": 1_000_000}),
        "workers": 4,
        "catalog_page_size": extra.get("catalog_page_size", 1000),
        "portals": portals,
    }
    path = tmp / "hub.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return Config.load(path)

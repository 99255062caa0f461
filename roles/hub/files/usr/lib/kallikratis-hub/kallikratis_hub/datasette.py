"""A portal's open datasets through Datasette's JSON API: the database page (tables, columns,
row counts) and the instance metadata (Greek titles, descriptions, licence). The instance index
`/data/.json` is not used: the web role's dot-file rule answers it 403 by design."""

from __future__ import annotations

import string
from typing import Any

from kallikratis_hub.fetch import Fetcher, FetchError
from kallikratis_hub.model import Dataset, Portal, Snapshot
from kallikratis_hub.wordpress import text

_TILDE_SAFE = frozenset(string.ascii_letters + string.digits + "_-")
MAX_TABLES = 500


def tilde_encode(name: str) -> str:
    """Datasette's own encoding of a table name in a URL path (0.62+)."""
    out = []
    for ch in name:
        if ch in _TILDE_SAFE:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def _metadata(f: Fetcher, portal: Portal) -> dict[str, Any]:
    body = f.get(portal.api(f"{portal.data_path}-/metadata.json")).json()
    if not isinstance(body, dict):
        raise FetchError("unexpected Datasette metadata: not an object")
    return body


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """PARENT[KEY] when it is an object, else {} (Datasette metadata is all optional)."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _license(meta: dict[str, Any], db: dict[str, Any], table: dict[str, Any]) -> str | None:
    for level in (table, db, meta):
        url = level.get("license_url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return url
    return None


def harvest(f: Fetcher, portal: Portal, snap: Snapshot) -> None:
    """Fill SNAP.datasets with every visible table of the portal's database."""
    base = portal.api(f"{portal.data_path}{portal.database}")
    info = f.get(base + ".json").json()
    if not isinstance(info, dict) or not isinstance(info.get("tables"), list):
        raise FetchError("unexpected Datasette answer: no table list")
    meta = _metadata(f, portal)
    db_meta = _obj(_obj(meta, "databases"), portal.database)
    tables_meta = _obj(db_meta, "tables")
    tables = [t for t in info["tables"] if isinstance(t, dict) and not t.get("hidden")]
    if len(tables) > MAX_TABLES:
        raise FetchError(f"{len(tables)} tables, over the {MAX_TABLES} limit")
    for table in tables:
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise FetchError("unexpected Datasette table: no name")
        tm = _obj(tables_meta, name)
        columns = table.get("columns")
        columns = columns if isinstance(columns, list) else []
        count = table.get("count")
        page = f"{base}/{tilde_encode(name)}"
        snap.datasets.append(
            Dataset(
                name=name,
                title=text(str(tm.get("title") or name), 300),
                description=text(str(tm.get("description") or ""), 2000),
                columns=tuple(str(c) for c in columns),
                rows=count if isinstance(count, int) and count >= 0 else None,
                license_url=_license(meta, db_meta, tm),
                page_url=page,
                csv_url=f"{page}.csv?_stream=on&_size=max",
                json_url=f"{page}.json?_shape=array",
            )
        )

"""Read-only queries over the hub's database (the harvester's or the public copy): what the
pages, the feeds, the catalog and the search show."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from kallikratis_hub.fold import match_expression

MAX_RESULTS = 50


def municipalities(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT slug, name, url, last_success, stale, error FROM municipality ORDER BY name"
    )
    return [dict(r) for r in rows]


def latest(
    conn: sqlite3.Connection,
    slug: str | None = None,
    limit: int = 50,
    kinds: tuple[str, ...] = ("post", "consultation"),
) -> list[dict[str, Any]]:
    """The newest posts and consultations (of one municipality, or all), newest first."""
    marks = ",".join("?" * len(kinds))
    where = f"i.kind IN ({marks})" + (" AND i.slug = ?" if slug else "")
    params: list[Any] = [*kinds, *([slug] if slug else []), limit]
    rows = conn.execute(
        "SELECT i.*, m.name AS municipality FROM item i JOIN municipality m USING (slug)"
        f" WHERE {where} ORDER BY i.published DESC, i.wp_id DESC LIMIT ?",
        params,
    )
    return [dict(r) for r in rows]


def news_by_municipality(conn: sqlite3.Connection, per: int = 5) -> list[dict[str, Any]]:
    out = []
    for m in municipalities(conn):
        m["posts"] = latest(conn, m["slug"], per, ("post",))
        out.append(m)
    return out


def open_consultations(conn: sqlite3.Connection, now_local: str) -> list[dict[str, Any]]:
    """Consultations still open at NOW_LOCAL ("YYYY-MM-DD HH:MM"), the closest deadline first."""
    rows = conn.execute(
        "SELECT i.*, m.name AS municipality FROM item i JOIN municipality m USING (slug)"
        " WHERE i.kind = 'consultation' AND (i.deadline IS NULL OR i.deadline >= ?)"
        " ORDER BY i.deadline IS NULL, i.deadline, i.published DESC",
        (now_local,),
    )
    return [dict(r) for r in rows]


def datasets(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT d.*, m.name AS municipality, m.url AS municipality_url FROM dataset d"
        " JOIN municipality m USING (slug) ORDER BY m.name, d.title, d.name"
    )
    out = []
    for r in rows:
        d = dict(r)
        d["columns"] = json.loads(d["columns"])
        out.append(d)
    return out


def search(conn: sqlite3.Connection, query: str, limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
    """Folded full-text search over items and datasets; at most LIMIT hits, best first."""
    expression = match_expression(query)
    if not expression:
        return []
    rows = conn.execute(
        "SELECT s.key, s.slug, s.kind, m.name AS municipality,"
        " COALESCE(i.title, d.title) AS title, COALESCE(i.link, d.page_url) AS link,"
        " COALESCE(i.summary, d.description) AS summary, i.deadline, i.comments"
        " FROM search s JOIN municipality m ON m.slug = s.slug"
        " LEFT JOIN item i ON s.kind IN ('post', 'consultation') AND i.slug = s.slug"
        "  AND i.kind = s.kind AND s.key = i.kind || ':' || i.slug || ':' || i.wp_id"
        " LEFT JOIN dataset d ON s.kind = 'dataset' AND d.slug = s.slug"
        "  AND s.key = 'dataset:' || d.slug || ':' || d.name"
        " WHERE search MATCH ? ORDER BY rank LIMIT ?",
        (expression, min(limit, MAX_RESULTS)),
    )
    return [dict(r) for r in rows]

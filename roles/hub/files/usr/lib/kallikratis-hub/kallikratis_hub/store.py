"""The hub's SQLite database: municipalities (with their staleness), items (posts and
consultations), datasets, an FTS5 index over folded text, and the HTTP validators cache.

One transaction per municipality: a harvest that fails leaves its municipality as it was (and
marked stale). The public snapshot (`publish`) is a copy without the HTTP cache, opened
read-only by the search application.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from kallikratis_hub.fetch import Cached
from kallikratis_hub.fold import fold
from kallikratis_hub.model import Dataset, Item, Outcome, Portal, Snapshot

SCHEMA = """
CREATE TABLE IF NOT EXISTS municipality (
    slug TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL,
    last_attempt TEXT, last_success TEXT, stale INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE TABLE IF NOT EXISTS item (
    slug TEXT NOT NULL REFERENCES municipality(slug) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('post', 'consultation')), wp_id INTEGER NOT NULL,
    title TEXT NOT NULL, summary TEXT NOT NULL, link TEXT NOT NULL,
    published TEXT NOT NULL, modified TEXT NOT NULL, deadline TEXT, comments INTEGER,
    PRIMARY KEY (slug, kind, wp_id));
CREATE TABLE IF NOT EXISTS dataset (
    slug TEXT NOT NULL REFERENCES municipality(slug) ON DELETE CASCADE, name TEXT NOT NULL,
    title TEXT NOT NULL, description TEXT NOT NULL, columns TEXT NOT NULL, rows INTEGER,
    license_url TEXT, page_url TEXT NOT NULL, csv_url TEXT NOT NULL, json_url TEXT NOT NULL,
    first_seen TEXT NOT NULL, modified TEXT NOT NULL, PRIMARY KEY (slug, name));
CREATE TABLE IF NOT EXISTS http_cache (
    url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, body BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(
    key UNINDEXED, slug UNINDEXED, kind UNINDEXED, title, body, tokenize = 'unicode61');
"""
ITEM_FIELDS = ("title", "summary", "link", "published", "modified", "deadline")
DATASET_FIELDS = (
    "title",
    "description",
    "columns",
    "rows",
    "license_url",
    "page_url",
    "csv_url",
    "json_url",
)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    return conn


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)

    def close(self) -> None:
        self.conn.close()

    # -- the configuration's municipalities ------------------------------------------------
    def sync_portals(self, portals: Iterable[Portal]) -> list[str]:
        """Add or rename the configured municipalities; drop the others with their data."""
        wanted = {p.slug: p for p in portals}
        with self.conn:
            self.conn.execute("BEGIN")
            gone = [
                r[0]
                for r in self.conn.execute("SELECT slug FROM municipality")
                if r[0] not in wanted
            ]
            for slug in gone:
                self.conn.execute("DELETE FROM search WHERE slug = ?", (slug,))
                self.conn.execute("DELETE FROM municipality WHERE slug = ?", (slug,))
            for p in wanted.values():
                self.conn.execute(
                    "INSERT INTO municipality (slug, name, url) VALUES (?, ?, ?) ON CONFLICT (slug)"
                    " DO UPDATE SET name = excluded.name, url = excluded.url",
                    (p.slug, p.name, p.url),
                )
        return gone

    def known(self, slug: str) -> dict[str, dict[int, tuple[str, str | None]]]:
        out: dict[str, dict[int, tuple[str, str | None]]] = {"post": {}, "consultation": {}}
        rows = self.conn.execute(
            "SELECT kind, wp_id, modified, deadline FROM item WHERE slug = ?", (slug,)
        )
        for r in rows:
            out[r["kind"]][r["wp_id"]] = (r["modified"], r["deadline"])
        return out

    def cache_for(self, url_prefix: str) -> dict[str, Cached]:
        rows = self.conn.execute(
            "SELECT url, etag, last_modified, body FROM http_cache WHERE substr(url, 1, ?) = ?",
            (len(url_prefix), url_prefix),
        )
        return {r["url"]: Cached(r["etag"], r["last_modified"], bytes(r["body"])) for r in rows}

    # -- one harvest's result --------------------------------------------------------------
    def mark_stale(self, slug: str, error: str, now: str) -> None:
        self.conn.execute(
            "UPDATE municipality SET stale = 1, error = ?, last_attempt = ? WHERE slug = ?",
            (error[:500], now, slug),
        )

    def apply(
        self, portal: Portal, snap: Snapshot, cache: Mapping[str, Cached], now: str
    ) -> Outcome:
        """Write SNAP for PORTAL in one transaction; count new, changed and removed records.
        CACHE replaces the portal's cached answers (those this run did not use go)."""
        slug = portal.slug
        counts = {"new": 0, "changed": 0, "removed": 0}
        with self.conn:
            self.conn.execute("BEGIN")
            name = self.conn.execute(
                "SELECT name FROM municipality WHERE slug = ?", (slug,)
            ).fetchone()[0]
            self._apply_items(slug, name, snap, counts)
            self._apply_datasets(slug, name, snap.datasets, now, counts)
            self.conn.execute(
                "DELETE FROM http_cache WHERE substr(url, 1, ?) = ?", (len(portal.url), portal.url)
            )
            for url, c in cache.items():
                self.conn.execute(
                    "INSERT OR REPLACE INTO http_cache (url, etag, last_modified, body)"
                    " VALUES (?, ?, ?, ?)",
                    (url, c.etag, c.last_modified, c.body),
                )
            self.conn.execute(
                "UPDATE municipality SET stale = 0, error = NULL, last_attempt = ?,"
                " last_success = ? WHERE slug = ?",
                (now, now, slug),
            )
        return Outcome(
            slug, new=counts["new"], changed=counts["changed"], removed=counts["removed"]
        )

    def _apply_items(self, slug: str, name: str, snap: Snapshot, counts: dict[str, int]) -> None:
        for kind, present in snap.present.items():
            stored = {
                r[0]
                for r in self.conn.execute(
                    "SELECT wp_id FROM item WHERE slug = ? AND kind = ?", (slug, kind)
                )
            }
            for wp_id in stored - present:
                self.conn.execute(
                    "DELETE FROM item WHERE slug = ? AND kind = ? AND wp_id = ?",
                    (slug, kind, wp_id),
                )
                self.conn.execute("DELETE FROM search WHERE key = ?", (_key(kind, slug, wp_id),))
                counts["removed"] += 1
        touched: set[int] = set()
        for item in snap.items:
            old = self.conn.execute(
                "SELECT * FROM item WHERE slug = ? AND kind = ? AND wp_id = ?",
                (slug, item.kind, item.wp_id),
            ).fetchone()
            comments = snap.comments.get(item.wp_id) if item.kind == "consultation" else None
            if comments is None and old is not None:
                comments = old["comments"]
            if old is not None and all(old[f] == getattr(item, f) for f in ITEM_FIELDS):
                continue
            counts["changed" if old is not None else "new"] += 1
            if item.kind == "consultation":
                touched.add(item.wp_id)
            self._put_item(slug, name, item, comments)
        for wp_id, count in snap.comments.items():
            if wp_id in touched:
                continue
            cur = self.conn.execute(
                "UPDATE item SET comments = ? WHERE slug = ? AND kind = 'consultation'"
                " AND wp_id = ? AND comments IS NOT ?",
                (count, slug, wp_id, count),
            )
            counts["changed"] += cur.rowcount

    def _put_item(self, slug: str, name: str, item: Item, comments: int | None) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO item (slug, kind, wp_id, title, summary, link, published,"
            " modified, deadline, comments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                slug,
                item.kind,
                item.wp_id,
                item.title,
                item.summary,
                item.link,
                item.published,
                item.modified,
                item.deadline,
                comments,
            ),
        )
        key = _key(item.kind, slug, item.wp_id)
        self.conn.execute("DELETE FROM search WHERE key = ?", (key,))
        self.conn.execute(
            "INSERT INTO search (key, slug, kind, title, body) VALUES (?, ?, ?, ?, ?)",
            (key, slug, item.kind, fold(item.title), fold(f"{item.summary} {name}")),
        )

    def _apply_datasets(
        self, slug: str, name: str, datasets: list[Dataset], now: str, counts: dict[str, int]
    ) -> None:
        stored = {
            r["name"]: r for r in self.conn.execute("SELECT * FROM dataset WHERE slug = ?", (slug,))
        }
        for gone in stored.keys() - {d.name for d in datasets}:
            self.conn.execute("DELETE FROM dataset WHERE slug = ? AND name = ?", (slug, gone))
            self.conn.execute("DELETE FROM search WHERE key = ?", (_key("dataset", slug, gone),))
            counts["removed"] += 1
        for d in datasets:
            values = {f: getattr(d, f) for f in DATASET_FIELDS}
            values["columns"] = json.dumps(list(d.columns), ensure_ascii=False)
            old = stored.get(d.name)
            if old is not None and all(old[f] == values[f] for f in DATASET_FIELDS):
                continue
            counts["changed" if old is not None else "new"] += 1
            first_seen = old["first_seen"] if old is not None else now
            self.conn.execute(
                "INSERT OR REPLACE INTO dataset (slug, name, first_seen, modified, "
                + ", ".join(DATASET_FIELDS)
                + ") VALUES (?, ?, ?, ?"
                + ", ?" * len(DATASET_FIELDS)
                + ")",
                (slug, d.name, first_seen, now, *values.values()),
            )
            key = _key("dataset", slug, d.name)
            self.conn.execute("DELETE FROM search WHERE key = ?", (key,))
            body = f"{d.description} {' '.join(d.columns)} {name}"
            self.conn.execute(
                "INSERT INTO search (key, slug, kind, title, body) VALUES (?, ?, 'dataset', ?, ?)",
                (key, slug, fold(d.title), fold(body)),
            )

    # -- the public copy -------------------------------------------------------------------
    def publish(self, dest: Path) -> None:
        """Write DEST atomically: everything but the HTTP cache, for the search application."""
        tmp = dest.with_name(dest.name + ".new")
        tmp.unlink(missing_ok=True)
        self.conn.execute("VACUUM INTO ?", (str(tmp),))
        with closing(sqlite3.connect(tmp)) as copy:
            copy.execute("DROP TABLE http_cache")
            copy.execute("PRAGMA journal_mode = DELETE")
            copy.execute("VACUUM")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)


def _key(kind: str, slug: str, ident: Any) -> str:
    return f"{kind}:{slug}:{ident}"

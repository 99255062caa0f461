"""The hub's value objects: a portal from the configuration, what one harvest of it found."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
KINDS = ("post", "consultation")


class ConfigError(Exception):
    """The hub's configuration file is unusable."""


@dataclass(frozen=True)
class Portal:
    slug: str
    name: str
    url: str  # https://portal.example.gr/ (ends with /)
    modules: tuple[str, ...]
    data_path: str = "/data/"
    database: str = "opendata"

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str) -> Portal:
        slug = str(raw.get("slug", ""))
        if not SLUG.match(slug):
            raise ConfigError(f"{where}: slug {slug!r} is not a lower-case name")
        url = str(raw.get("url", ""))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ConfigError(f"{where} ({slug}): url {url!r} is not an http(s) base URL")
        name = str(raw.get("name") or slug)
        if any(ord(c) < 32 for c in name):
            raise ConfigError(f"{where} ({slug}): name has a control character")
        data_path = str(raw.get("data_path", "/data/"))
        if not re.match(r"^/[A-Za-z0-9_/-]*/$", data_path):
            raise ConfigError(f"{where} ({slug}): data_path {data_path!r} must be /path/")
        database = str(raw.get("database", "opendata"))
        if not re.match(r"^[A-Za-z0-9_-]+$", database):
            raise ConfigError(f"{where} ({slug}): database {database!r} is not a plain name")
        modules = tuple(str(m) for m in raw.get("modules", ()))
        return cls(slug, name, url.rstrip("/") + "/", modules, data_path, database)

    def api(self, path: str) -> str:
        return self.url + path.lstrip("/")

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True)
class Item:
    """A news post or a consultation (the top-level post), as the hub keeps it: no author,
    no comment text, only what the portal shows any visitor."""

    kind: str
    wp_id: int
    title: str
    summary: str
    link: str
    published: str  # ISO 8601, UTC (WordPress' date_gmt + "Z")
    modified: str  # ISO 8601, UTC
    deadline: str | None = None  # consultations: "YYYY-MM-DD HH:MM", the portal's local time
    comments: int | None = None  # consultations: approved comments, all articles


@dataclass(frozen=True)
class Dataset:
    name: str  # the Datasette table
    title: str
    description: str
    columns: tuple[str, ...]
    rows: int | None
    license_url: str | None
    page_url: str
    csv_url: str
    json_url: str


@dataclass
class Snapshot:
    """One successful harvest of one portal.

    present: every id the portal publishes now, per kind (what is not there is removed);
    items: the records fetched this time (new or possibly changed), the others are unchanged;
    datasets: the complete list (a Datasette index is small).
    """

    present: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in KINDS})
    items: list[Item] = field(default_factory=list)
    comments: dict[int, int] = field(default_factory=dict)  # consultation id -> approved comments
    datasets: list[Dataset] = field(default_factory=list)
    requests: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one harvest did to one municipality, for the report."""

    slug: str
    new: int = 0
    changed: int = 0
    removed: int = 0
    stale: bool = False
    error: str | None = None
    seconds: float = 0.0
    requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "new": self.new,
            "changed": self.changed,
            "removed": self.removed,
            "stale": self.stale,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
        }

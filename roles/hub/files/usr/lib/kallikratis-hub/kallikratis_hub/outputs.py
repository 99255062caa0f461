"""Every static file of one harvest, written atomically under the public directory:
index.html, consultations/index.html, datasets/index.html, feed.atom, <slug>/feed.atom and
the DCAT-AP catalog files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from kallikratis_hub import dcat, feeds, pages, views
from kallikratis_hub.harvest import Config, local_now
from kallikratis_hub.model import SLUG


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


def write_all(conn: sqlite3.Connection, cfg: Config, now: datetime) -> None:
    out = cfg.public_dir
    now_local = local_now(cfg, now)
    munis = views.municipalities(conn)
    common = {"cfg": cfg, "municipalities": munis, "generated": now_local}
    write(
        out / "index.html",
        pages.render("index.html", news=views.news_by_municipality(conn), **common),
    )
    write(
        out / "consultations/index.html",
        pages.render(
            "consultations.html", consultations=views.open_consultations(conn, now_local), **common
        ),
    )
    datasets = views.datasets(conn)
    write(out / "datasets/index.html", pages.render("datasets.html", datasets=datasets, **common))
    write(out / "feed.atom", feeds.atom(cfg, views.latest(conn, limit=cfg.feed_size), now))
    for m in munis:
        items = views.latest(conn, m["slug"], cfg.feed_size)
        write(out / m["slug"] / "feed.atom", feeds.atom(cfg, items, now, m))
    keep = {m["slug"] for m in munis}
    for child in out.iterdir():
        if (
            child.is_dir()
            and SLUG.match(child.name)
            and (child / "feed.atom").exists()
            and child.name not in keep
        ):
            shutil.rmtree(child)
    _catalog(out, cfg, datasets, now)


def _catalog(out: Path, cfg: Config, datasets: list[dict[str, Any]], now: datetime) -> None:
    """The DCAT-AP files, rebuilt only when the datasets (or the catalog's settings) changed:
    most harvests change no dataset, and the catalog of 332 x 10 datasets takes seconds."""
    basis = [
        cfg.hub_url,
        cfg.title,
        cfg.description,
        cfg.publisher,
        cfg.catalog_page_size,
        dcat.__version__,
        datasets,
    ]
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()
    marker = out / ".catalog.sha256"  # a dot file: nginx does not serve it
    current = marker.read_text(encoding="ascii").strip() if marker.exists() else ""
    if current == digest and (out / "catalog.ttl").exists():
        return
    names = set()
    for name, data in dcat.serialize(cfg, datasets, now):
        write(out / name, data)
        names.add(name)
    for old in out.glob("catalog-page-*"):
        if old.name not in names:
            old.unlink()
    write(marker, digest + "\n")

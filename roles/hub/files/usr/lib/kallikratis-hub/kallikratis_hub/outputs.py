"""Every static file of one harvest, written atomically under the public directory:
index.html, consultations/index.html, datasets/index.html, feed.atom, <slug>/feed.atom and
the DCAT-AP catalog files."""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

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
    names = set()
    for name, data in dcat.serialize(cfg, datasets, now):
        write(out / name, data)
        names.add(name)
    for old in out.glob("catalog-page-*"):
        if old.name not in names:
            old.unlink()

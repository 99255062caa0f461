"""Atom feeds of news and consultations (feedgen): the region's /feed.atom and one
/<slug>/feed.atom per municipality, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from feedgen.feed import FeedGenerator

from kallikratis_hub.harvest import Config

KIND_LABELS = {"post": "Νέα (News)", "consultation": "Διαβούλευση (Consultation)"}


def utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _summary(item: dict[str, Any]) -> str:
    parts = [item["summary"]] if item["summary"] else []
    if item["kind"] == "consultation":
        parts.append(f"Προθεσμία (deadline): {item['deadline'] or '—'}")
        if item["comments"] is not None:
            parts.append(f"Σχόλια (comments): {item['comments']}")
    return " · ".join(parts) or item["title"]


def atom(
    cfg: Config,
    items: Sequence[dict[str, Any]],
    now: datetime,
    municipality: dict[str, Any] | None = None,
) -> bytes:
    """One Atom document: the region's (MUNICIPALITY None) or one municipality's."""
    host = urlsplit(cfg.hub_url).hostname or "hub"
    path = f"{municipality['slug']}/feed.atom" if municipality else "feed.atom"
    fg = FeedGenerator()
    fg.id(f"{cfg.hub_url}{path}")
    title = f"{municipality['name']} — {cfg.title}" if municipality else cfg.title
    fg.title(title)
    fg.subtitle("Νέα και διαβουλεύσεις (news and public consultations)")
    fg.link(href=f"{cfg.hub_url}{path}", rel="self", type="application/atom+xml")
    fg.link(href=municipality["url"] if municipality else cfg.hub_url, rel="alternate")
    fg.language("el")
    fg.author({"name": municipality["name"] if municipality else cfg.publisher})
    fg.generator("kallikratis-hub")
    fg.updated(max((utc(i["modified"]) for i in items), default=now))
    for item in items:
        fe = fg.add_entry(order="append")
        fe.id(f"tag:{host},2026:{item['slug']}/{item['kind']}/{item['wp_id']}")
        fe.title(item["title"] or "—")
        fe.link(href=item["link"], rel="alternate")
        fe.published(utc(item["published"]))
        fe.updated(utc(item["modified"]))
        fe.author({"name": item["municipality"]})
        fe.summary(_summary(item))
        fe.category(term=item["kind"], label=KIND_LABELS[item["kind"]])
    return fg.atom_str(pretty=True)

"""A portal's news posts and consultations through the WordPress REST API (public, anonymous).

Per kind, each run: (1) the list of published ids with their modification time (`_fields`,
X-WP-TotalPages pagination): what is missing has been deleted or unpublished; (2) the records
modified since the last run (`modified_after`, one day of overlap against time-zone slips), and
by `include=` any changed id that query did not return; (3) for consultations, the approved
comment counts: the portal's read-only REST field `kallikratis_comments` (a consultation and its
articles), asked in the listing of (1) at no extra request; a portal without it (older portal
roles: WordPress leaves an unknown `_fields` name out) is asked for the count of each open one
(X-WP-Total of the comments endpoint, one request each; no comment is read).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from kallikratis_hub.fetch import Fetcher, FetchError
from kallikratis_hub.model import Item, Portal, Snapshot

ROUTES = {"post": "wp-json/wp/v2/posts", "consultation": "wp-json/wp/v2/consultations"}
FIELDS = "id,date_gmt,modified_gmt,link,title,excerpt"
DEADLINE_META = "kallikratis_deadline"
COMMENTS_FIELD = "kallikratis_comments"
WP_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
DEADLINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$")
TAG = re.compile(r"<[^>]*>")
MAX_TITLE, MAX_SUMMARY, MAX_COMMENT_QUERIES = 300, 500, 100

#: what the hub knows of one record: modified (UTC ISO) and, for consultations, the deadline
Known = Mapping[int, tuple[str, str | None]]


def text(rendered: Any, limit: int) -> str:
    """WordPress' rendered HTML as plain text (tags out, entities decoded, spaces collapsed)."""
    if not isinstance(rendered, str):
        raise FetchError("unexpected record: rendered text is not a string")
    plain = " ".join(html.unescape(TAG.sub(" ", rendered)).split())
    return plain if len(plain) <= limit else plain[: limit - 1].rstrip() + "…"


def _utc(value: Any) -> str:
    if not isinstance(value, str) or not WP_DATE.match(value):
        raise FetchError(f"unexpected record: date {value!r}")
    return value + "Z"


def _id(raw: Any) -> int:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), int) or raw["id"] <= 0:
        raise FetchError("unexpected record: no numeric id")
    return int(raw["id"])


def pages(f: Fetcher, url: str) -> Iterator[list[dict[str, Any]]]:
    """Every page of a WordPress collection (X-WP-TotalPages), bounded by the page limit."""
    sep = "&" if "?" in url else "?"
    page, total = 1, 1
    while page <= total:
        r = f.get(f"{url}{sep}page={page}")
        body = r.json()
        if not isinstance(body, list) or not all(isinstance(x, dict) for x in body):
            raise FetchError(f"unexpected answer from {url}: not a list of records")
        if page == 1:
            header = r.headers.get("x-wp-totalpages", "1")
            total = int(header) if header.isdigit() else 1
            if total > f.limits.max_pages:
                raise FetchError(f"{total} pages at {url}, over the {f.limits.max_pages} limit")
        yield body
        page += 1


def _item(portal: Portal, kind: str, raw: dict[str, Any]) -> Item:
    link = raw.get("link")
    if not isinstance(link, str) or urlsplit(link).netloc != portal.netloc:
        link = portal.url  # never a link to another host (or a javascript: URL) from a tenant
    deadline = None
    if kind == "consultation":
        meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
        value = meta.get(DEADLINE_META) if meta else None
        deadline = value if isinstance(value, str) and DEADLINE.match(value) else None
    return Item(
        kind=kind,
        wp_id=_id(raw),
        title=text((raw.get("title") or {}).get("rendered", ""), MAX_TITLE),
        summary=text((raw.get("excerpt") or {}).get("rendered", ""), MAX_SUMMARY),
        link=link,
        published=_utc(raw.get("date_gmt")),
        modified=_utc(raw.get("modified_gmt")),
        deadline=deadline,
    )


def _count(raw: dict[str, Any]) -> int | None:
    """The record's `kallikratis_comments`, None when the portal does not publish the field."""
    if COMMENTS_FIELD not in raw:
        return None
    value = raw[COMMENTS_FIELD]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FetchError(f"unexpected record: {COMMENTS_FIELD} {value!r}")
    return value


@dataclass
class Listing:
    """Published ids -> modified (top-level ones for consultations), each one's articles, and
    the comment counts the portal gave in the listing itself (consultations that have one)."""

    roots: dict[int, str] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)


def _listing(f: Fetcher, portal: Portal, kind: str) -> Listing:
    fields = "id,modified_gmt,parent" + (f",{COMMENTS_FIELD}" if kind == "consultation" else "")
    query = {
        "_fields": fields,
        "per_page": f.limits.per_page,
        "orderby": "id",
        "order": "asc",
    }
    url = f"{portal.api(ROUTES[kind])}?{urlencode(query)}"
    out = Listing()
    parent_of: dict[int, int] = {}
    for page in pages(f, url):
        for raw in page:
            parent = raw.get("parent", 0)
            if kind == "consultation" and isinstance(parent, int) and parent > 0:
                parent_of[_id(raw)] = parent
                continue
            out.roots[_id(raw)] = _utc(raw.get("modified_gmt"))
            if kind == "consultation" and (count := _count(raw)) is not None:
                out.counts[_id(raw)] = count
    out.children = {i: [] for i in out.roots}
    for child, parent in parent_of.items():
        if parent in out.children:
            out.children[parent].append(child)
    return out


def _since(known: Known) -> str | None:
    if not known:
        return None
    latest = max(datetime.fromisoformat(m.rstrip("Z")) for m, _ in known.values())
    return (latest - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")


def _fetch_changed(
    f: Fetcher, portal: Portal, kind: str, wanted: set[int], since: str | None
) -> dict[int, dict[str, Any]]:
    fields = FIELDS + (",parent,meta" if kind == "consultation" else "")
    base = {
        "_fields": fields,
        "per_page": f.limits.per_page,
        "orderby": "modified",
        "order": "desc",
    }
    found: dict[int, dict[str, Any]] = {}
    query = {**base, **({"modified_after": since} if since else {})}
    for page in pages(f, f"{portal.api(ROUTES[kind])}?{urlencode(query)}"):
        found.update((i, raw) for raw in page if (i := _id(raw)) in wanted)
    missing = sorted(wanted - found.keys())
    for start in range(0, len(missing), f.limits.per_page):
        chunk = ",".join(str(i) for i in missing[start : start + f.limits.per_page])
        query = {**base, "include": chunk, "orderby": "id"}
        for page in pages(f, f"{portal.api(ROUTES[kind])}?{urlencode(query)}"):
            found.update((i, raw) for raw in page if (i := _id(raw)) in wanted)
    return found


def comment_count(f: Fetcher, portal: Portal, ids: list[int]) -> int:
    """Approved comments on these posts: the X-WP-Total header, one id field fetched."""
    query = {"post": ",".join(str(i) for i in ids), "per_page": 1, "_fields": "id"}
    r = f.get(f"{portal.api('wp-json/wp/v2/comments')}?{urlencode(query)}")
    r.json()  # garbage is an error even when the header looks fine
    total = r.headers.get("x-wp-total", "")
    if not total.isdigit():
        raise FetchError("the comments endpoint gave no X-WP-Total")
    return int(total)


def _is_open(deadline: str | None, now_local: str) -> bool:
    return deadline is None or deadline >= now_local


def harvest(
    f: Fetcher, portal: Portal, known: Mapping[str, Known], now_local: str, snap: Snapshot
) -> None:
    """Fill SNAP with the portal's posts and consultations (NOW_LOCAL: "YYYY-MM-DD HH:MM")."""
    for kind in ROUTES:
        mine = known.get(kind, {})
        listing = _listing(f, portal, kind)
        roots = listing.roots
        snap.present[kind] = set(roots)
        wanted = {i for i, m in roots.items() if i not in mine or mine[i][0] != m}
        found = _fetch_changed(f, portal, kind, wanted, _since(mine)) if wanted else {}
        items = {i: _item(portal, kind, raw) for i, raw in found.items()}
        if kind == "consultation":
            # the portal's own field: every consultation, every run, no request more
            snap.comments.update(listing.counts)
            deadlines = {
                i: items[i].deadline if i in items else mine.get(i, ("", None))[1] for i in roots
            }
            # without it: open ones every run; closed ones when first seen or changed (counts
            # then freeze), one request each
            due = [
                i
                for i in roots
                if i not in listing.counts and (i in items or _is_open(deadlines[i], now_local))
            ]
            for i in sorted(due, reverse=True)[:MAX_COMMENT_QUERIES]:
                snap.comments[i] = comment_count(f, portal, [i, *listing.children.get(i, [])])
        snap.items.extend(items.values())

"""Municipality portals on loopback for the hub's harvester: one HTTP server, one portal per
first path segment (http://127.0.0.1:PORT/<slug>/), each answering the recorded WordPress REST
and Datasette answers of tests/unit/data/hub, or misbehaving on demand (a 500, malformed JSON,
a timeout, an enormous page)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).resolve().parents[1] / "unit/data/hub"
MODES = ("ok", "500", "garbage", "timeout", "huge", "huge-unannounced")


def recorded(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@dataclass
class Portal:
    """One portal's content and behaviour; tests change it between harvests."""

    posts: list[dict[str, Any]] = field(default_factory=lambda: recorded("wordpress/posts.json"))
    consultations: list[dict[str, Any]] = field(
        default_factory=lambda: recorded("wordpress/consultations.json")
    )
    comments: dict[int, int] = field(
        default_factory=lambda: {int(k): v for k, v in recorded("wordpress/comments.json").items()}
    )
    database: dict[str, Any] = field(default_factory=lambda: recorded("datasette/opendata.json"))
    metadata: dict[str, Any] = field(default_factory=lambda: recorded("datasette/metadata.json"))
    mode: str = "ok"
    etag: bool = False
    delay_s: float = 0.0
    hits: list[str] = field(default_factory=list)
    not_modified: int = 0
    vanish: set[int] = field(default_factory=set)  # listed, but gone when fetched in full
    #: the portal role's REST field `kallikratis_comments` on consultations (False: an older
    #: portal without it, as the recorded answers were made)
    comments_field: bool = False


@dataclass
class Region:
    portals: dict[str, Portal] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        region = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                _serve(region, self)

        return Handler


def _fields(records: list[dict[str, Any]], args: dict[str, list[str]]) -> list[dict[str, Any]]:
    wanted = args.get("_fields", [""])[0]
    if not wanted:
        return records
    keep = set(wanted.split(","))
    return [{k: v for k, v in r.items() if k in keep} for r in records]


def _collection(
    records: list[dict[str, Any]], args: dict[str, list[str]], base: str, vanish: set[int]
):
    items = [json.loads(json.dumps(r).replace("{base}", base)) for r in records]
    if "modified_after" in args or "include" in args:
        items = [r for r in items if r["id"] not in vanish]
    if "modified_after" in args:
        items = [r for r in items if r["modified_gmt"] > args["modified_after"][0]]
    if "include" in args:
        ids = {int(i) for i in args["include"][0].split(",")}
        items = [r for r in items if r["id"] in ids]
    order = args.get("orderby", ["date"])[0]
    key = {"id": "id", "modified": "modified_gmt"}.get(order, "date_gmt")
    items.sort(key=lambda r: r[key], reverse=args.get("order", ["desc"])[0] == "desc")
    per_page = int(args.get("per_page", ["10"])[0])
    page = int(args.get("page", ["1"])[0])
    pages = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    return _fields(chunk, args), {"X-WP-Total": str(len(items)), "X-WP-TotalPages": str(pages)}


def _with_counts(portal: Portal) -> list[dict[str, Any]]:
    """Consultations with `kallikratis_comments` as the portal's get_callback computes it when a
    request asks: a consultation's approved comments and its published articles', an article's
    own."""
    articles: dict[int, list[int]] = {}
    for c in portal.consultations:
        if c.get("parent"):
            articles.setdefault(c["parent"], []).append(c["id"])
    out = []
    for c in portal.consultations:
        ids = [c["id"]] if c.get("parent") else [c["id"], *articles.get(c["id"], [])]
        out.append({**c, "kallikratis_comments": sum(portal.comments.get(i, 0) for i in ids)})
    return out


def _route(portal: Portal, rest: str, args: dict[str, list[str]], base: str):
    if rest == "wp-json/wp/v2/posts":
        return _collection(portal.posts, args, base, portal.vanish)
    if rest == "wp-json/wp/v2/consultations":
        records = _with_counts(portal) if portal.comments_field else portal.consultations
        return _collection(records, args, base, portal.vanish)
    if rest == "wp-json/wp/v2/comments":
        ids = [int(i) for i in args.get("post", [""])[0].split(",") if i]
        total = sum(portal.comments.get(i, 0) for i in ids)
        # what WordPress holds for each comment; `_fields=id` keeps the personal data out
        records = [
            {
                "id": 1000 + i,
                "post": i,
                "author_name": "Ελένη Παπαδοπούλου",
                "content": {"rendered": "<p>Σχόλιο</p>"},
            }
            for i in ids[:1]
            if total
        ]
        return _fields(records, args), {"X-WP-Total": str(total)}
    if rest == "data/opendata.json":
        return portal.database, {}
    if rest == "data/-/metadata.json":
        return portal.metadata, {}
    if rest == "data/.json":
        return None, {"status": "403"}
    return None, {"status": "404"}


def _serve(region: Region, h: BaseHTTPRequestHandler) -> None:
    parts = urlsplit(h.path)
    slug, _, rest = parts.path.lstrip("/").partition("/")
    with region.lock:
        portal = region.portals.get(slug)
        if portal is not None:
            portal.hits.append(h.path)
            portal = copy.copy(portal)
    if portal is None:
        return _send(h, 404, b"{}")
    if portal.delay_s:
        time.sleep(portal.delay_s)
    if portal.mode == "500":
        return _send(h, 500, b"<h1>Internal Server Error</h1>", "text/html")
    if portal.mode == "timeout":
        time.sleep(3)
        return _send(h, 200, b"[]")
    if portal.mode.startswith("huge"):
        # 8 MB of records; "huge-unannounced": no Content-Length, the body ends with the connection
        body = b"[" + b'{"id": 1},' * 800_000 + b'{"id": 2}]'
        return _send(h, 200, body, length=portal.mode == "huge")
    host = h.headers.get("Host", "127.0.0.1")
    body, headers = _route(portal, rest, parse_qs(parts.query), f"http://{host}/{slug}/")
    status = int(headers.pop("status", "200"))
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if portal.mode == "garbage":
        data = data[: max(1, len(data) // 2)] + b"\x00<html>"
    if portal.etag and status == 200:
        tag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        headers["ETag"] = tag
        if h.headers.get("If-None-Match") == tag:
            with region.lock:
                region.portals[slug].not_modified += 1
            return _send(h, 304, b"", headers=headers)
    _send(h, status, data, headers=headers)


def _send(
    h: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    ctype: str = "application/json",
    headers: dict[str, str] | None = None,
    length: bool = True,
) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if status != 304:
        h.send_header("Content-Type", f"{ctype}; charset=UTF-8")
        if length:
            h.send_header("Content-Length", str(len(data)))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
    h.end_headers()
    if status != 304:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            h.wfile.write(data)

"""The hub's search: a small WSGI application behind nginx, over the read-only public copy of
the database (FTS5 on folded text). GET /search?q=...[&format=json]; bounded query length,
term count and results; parameterised SQL; autoescaped HTML."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kallikratis_hub import pages, views

MAX_QUERY = 200
LABELS = {
    "post": "Νέα / News",
    "consultation": "Διαβούλευση / Consultation",
    "dataset": "Δεδομένα / Dataset",
}
HEADERS = [("X-Content-Type-Options", "nosniff"), ("Cache-Control", "public, max-age=60")]
StartResponse = Callable[..., Any]


class SearchApp:
    def __init__(self, db: Path, site: dict[str, str]) -> None:
        self.db = db
        self.site = site  # title, hub_url

    def query(self, text: str) -> list[dict[str, Any]]:
        if not self.db.exists():
            return []
        uri = f"file:{self.db}?mode=ro&immutable=1"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            return views.search(conn, text)

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/search":
            return _plain(start, "404 Not Found", "not found\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _plain(start, "405 Method Not Allowed", "GET only\n", [("Allow", "GET, HEAD")])
        try:
            args = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=4)
        except ValueError:
            return _plain(start, "400 Bad Request", "too many parameters\n")
        text = (args.get("q") or [""])[0][:MAX_QUERY]
        results = self.query(text) if text.strip() else []
        if (args.get("format") or [""])[0] == "json":
            body = json.dumps({"query": text, "results": results}, ensure_ascii=False)
            start("200 OK", [("Content-Type", "application/json; charset=utf-8"), *HEADERS])
            return [body.encode("utf-8")]
        page = pages.render(
            "search.html",
            cfg=self.site,
            query=text,
            results=results,
            labels=LABELS,
            limit=views.MAX_RESULTS,
            generated="",
        )
        start("200 OK", [("Content-Type", "text/html; charset=utf-8"), *HEADERS])
        return [page.encode("utf-8")]


def _plain(
    start: StartResponse, status: str, text: str, extra: list[tuple[str, str]] | None = None
) -> list[bytes]:
    start(status, [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])])
    return [text.encode("utf-8")]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # nginx logs the requests (without the query string's personal searches)


def serve(app: SearchApp, host: str, port: int) -> None:
    with make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler) as srv:
        srv.serve_forever()

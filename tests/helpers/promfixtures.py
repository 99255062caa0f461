"""Recorded Prometheus HTTP API answers, served from a real HTTP server on 127.0.0.1.

The fixture directory (tests/unit/data/prometheus/) holds ``index.json``, a plain map
``{"query": {PromQL: file}, "query_range": {PromQL: file}}``, and one file per answer in the
exact JSON of Prometheus' HTTP API. ``scripts/record-prometheus`` writes both from a live server;
a query missing from the map is answered like Prometheus answers a bad query (HTTP 400).

    with PromFixtures.load(DIR).serve() as url:
        Prometheus(url).query("up")

``scaled(n)`` multiplies every municipality's series into *n* municipalities (for the bench).
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.helpers.loopback import http_server

ENDPOINTS = ("query", "query_range")


class PromFixtures:
    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        #: endpoint -> PromQL -> the parsed answer
        self.answers = answers
        self.requests: list[tuple[str, str]] = []

    @classmethod
    def load(cls, directory: Path) -> PromFixtures:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        return cls(
            {
                ep: {
                    expr: json.loads((directory / name).read_text(encoding="utf-8"))
                    for expr, name in index.get(ep, {}).items()
                }
                for ep in ENDPOINTS
            }
        )

    def replace(self, endpoint: str, expr: str, result: list[Any]) -> None:
        """Answer *expr* with *result* (the "result" list) from now on."""
        answer = copy.deepcopy(self.answers[endpoint][expr])
        answer["data"]["result"] = result
        self.answers[endpoint][expr] = answer

    def scaled(self, count: int, slugs: list[str]) -> PromFixtures:
        """Every series labelled with a municipality copied to ``<slug>``, for *count* slugs
        (round robin over the recorded municipalities)."""
        out: dict[str, dict[str, Any]] = {}
        for ep, answers in self.answers.items():
            out[ep] = {}
            for expr, answer in answers.items():
                answer = copy.deepcopy(answer)
                result = answer["data"]["result"]
                if answer["data"].get("resultType") in ("vector", "matrix"):
                    recorded = sorted({r["metric"].get("municipality", "") for r in result} - {""})
                    fleetwide = [r for r in result if "municipality" not in r["metric"]]
                    scaled = []
                    for i, slug in enumerate(slugs[:count]):
                        source = recorded[i % len(recorded)] if recorded else None
                        for r in result:
                            if source and r["metric"].get("municipality") == source:
                                r2 = copy.deepcopy(r)
                                r2["metric"]["municipality"] = slug
                                scaled.append(r2)
                    answer["data"]["result"] = fleetwide + scaled
                out[ep][expr] = answer
        return PromFixtures(out)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """An HTTP server on 127.0.0.1 (a free port) answering /api/v1/query[_range]."""
        fixtures = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(url.query)
                endpoint = url.path.removeprefix("/api/v1/")
                expr = params.get("query", [""])[0]
                fixtures.requests.append((endpoint, expr))
                answer = fixtures.answers.get(endpoint, {}).get(expr)
                if answer is None:
                    status, answer = (
                        400,
                        {
                            "status": "error",
                            "errorType": "bad_data",
                            "error": f"no recorded answer for {expr!r}",
                        },
                    )
                else:
                    status = 200
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        with http_server(Handler) as url:
            yield url

"""Bounded HTTP GETs to one portal: a time budget for the whole municipality, a timeout and a
size cap per response, no redirects (a tenant must not steer the hub to another host), no proxy
from the environment, and conditional requests (ETag / Last-Modified) with a cache of the last
answer so that a 304 is transparent to the callers."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "kallikratis-hub/1.0 (+regional interoperability hub)"
CHUNK = 65536


class FetchError(Exception):
    """The portal did not answer usably (down, timeout, HTTP error, too large, not JSON)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # one request
    budget_s: float = 60.0  # one municipality, all its requests
    max_bytes: int = 4 * 1024 * 1024  # one response body
    max_pages: int = 50  # one paginated listing
    per_page: int = 100  # WordPress' own maximum

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> Limits:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    from_cache: bool = False

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FetchError(f"malformed JSON ({exc.__class__.__name__}: {exc})") from None


@dataclass(frozen=True)
class Cached:
    etag: str | None
    last_modified: str | None
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirect to {newurl} refused", headers, fp
        )


def opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=context),
        _NoRedirect(),
    )


@dataclass
class Fetcher:
    """GETs for one municipality within LIMITS; CACHE_GET/CACHE_PUT keep conditional answers."""

    limits: Limits
    open_url: Callable[..., Any]
    cache_get: Callable[[str], Cached | None] = lambda url: None
    cache_put: Callable[[str, Cached], None] = lambda url, c: None
    started: float = field(default_factory=time.monotonic)
    requests: int = 0

    def _remaining(self) -> float:
        left = self.started + self.limits.budget_s - time.monotonic()
        if left <= 0:
            raise FetchError(f"time budget of {self.limits.budget_s:g} s exhausted")
        return left

    def get(self, url: str) -> Response:
        timeout = min(self.limits.timeout_s, self._remaining())
        cached = self.cache_get(url)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if cached and cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached and cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        self.requests += 1
        try:
            with self.open_url(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                status, names = r.status, {k.lower(): v for k, v in r.headers.items()}
                body = self._read(r)
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and cached is not None:
                self.cache_put(url, cached)  # still in use: kept for the next run
                return Response(
                    200, {k.lower(): v for k, v in exc.headers.items()}, cached.body, True
                )
            raise FetchError(f"HTTP {exc.code} from {url}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise FetchError(f"{url}: {getattr(exc, 'reason', exc)}") from None
        if status != 200:
            raise FetchError(f"HTTP {status} from {url}")
        etag, modified = names.get("etag"), names.get("last-modified")
        if etag or modified:
            self.cache_put(url, Cached(etag, modified, body))
        return Response(status, names, body)

    def _read(self, r: Any) -> bytes:
        declared = r.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:
            raise FetchError(f"response of {declared} bytes over the {self.limits.max_bytes} limit")
        chunks: list[bytes] = []
        size = 0
        while chunk := r.read(CHUNK):
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchError(f"response over the {self.limits.max_bytes} bytes limit")
            self._remaining()
            chunks.append(chunk)
        return b"".join(chunks)

"""A bounded same-origin link follower: every page of a site reachable from a start page,
with the links that are broken (4xx/5xx) and the ones that lead to a theme's demo content.

Plain HTTP(S) from the standard library (no browser needed to read <a href>). A name can be
pinned to an address (the lab's VMs have no DNS entry) and a CA file trusted (the fleet CA):

    report = crawl("https://portal.test/", resolve={"portal.test": "10.0.0.5"}, cafile=ca)
    assert not report.broken and not report.placeholders, report

Pages on other origins are listed, never fetched (the VMs and the tests have no Internet).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

#: links a theme's demo content carries: the empty anchor and its demo pages
PLACEHOLDER_HREFS = ("#", "")
PLACEHOLDER_PATHS = re.compile(
    r"^/(about|faqs?|authors?|events?|shop|patterns|themes|blog|sample-page|hello-world)/?$",
    re.I,
)
PLACEHOLDER_HOSTS = ("wordpress.org", "www.wordpress.org", "example.com", "www.example.com")
#: not pages for citizens: never followed (the admin paths may answer 403 by design)
SKIP_PATHS = re.compile(r"^/(wp-admin|wp-login\.php|wp-json|xmlrpc\.php|feed|comments/feed)")


@dataclass
class Report:
    pages: dict[str, int] = field(default_factory=dict)  # URL -> status
    broken: list[tuple[str, str, int]] = field(default_factory=list)  # (page, link, status)
    placeholders: list[tuple[str, str]] = field(default_factory=list)  # (page, href)
    external: set[str] = field(default_factory=set)
    truncated: bool = False

    def __str__(self) -> str:
        lines = [f"{len(self.pages)} pages, truncated={self.truncated}"]
        lines += [f"broken: {page} -> {link} ({status})" for page, link, status in self.broken]
        lines += [f"placeholder: {page} -> {href!r}" for page, href in self.placeholders]
        return "\n".join(lines)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href":
                    self.hrefs.append((value or "").strip())


def links_of(page_html: str) -> list[str]:
    parser = _Links()
    parser.feed(page_html)
    return parser.hrefs


def is_placeholder(href: str, absolute: str) -> bool:
    parts = urlsplit(absolute)
    return (
        href in PLACEHOLDER_HREFS
        or href.startswith("javascript:")
        or (parts.hostname or "") in PLACEHOLDER_HOSTS
        or PLACEHOLDER_PATHS.match(parts.path) is not None
    )


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a pinned address, with the real host name for SNI and the certificate check."""

    def __init__(
        self, address: str, port: int, server_name: str, ctx: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(address, port, timeout=timeout, context=ctx)
        self._server_name = server_name
        self._ctx = ctx

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._server_name)


def _fetch(
    url: str, resolve: dict[str, str], cafile: Path | None, timeout: float
) -> tuple[int, str, str]:
    """(status, content type, body) of one GET; a redirect: (status, "redirect", target)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = resolve.get(host, host)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        conn = PinnedHTTPS(address, parts.port or 443, host, ctx, timeout)
    else:
        conn = http.client.HTTPConnection(address, parts.port or 80, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path, headers={"Host": parts.netloc, "Accept": "text/html"})
        res = conn.getresponse()
        body = res.read(2_000_000)
        location = res.getheader("Location") or ""
        if 300 <= res.status < 400 and location:
            return res.status, "redirect", urljoin(url, location)
        ctype = res.getheader("Content-Type") or ""
        return res.status, ctype, body.decode("utf-8", errors="replace")
    finally:
        conn.close()


def crawl(
    start: str,
    *,
    resolve: dict[str, str] | None = None,
    cafile: Path | None = None,
    max_pages: int = 60,
    time_budget: float = 60.0,
    timeout: float = 15.0,
    no_follow: tuple[str, ...] = (),
) -> Report:
    """Follow every same-origin link from *start*, breadth first, at most *max_pages* pages
    and *time_budget* seconds (the report says when it stopped early). Pages under a path
    prefix in *no_follow* (another application, e.g. /data/) are fetched, their links not
    followed."""
    resolve = resolve or {}
    origin = urlsplit(start)[:2]
    report = Report()
    queue: deque[tuple[str, str]] = deque([(start, start)])  # (url, the page linking to it)
    seen = {start}
    deadline = time.monotonic() + time_budget
    while queue:
        if len(report.pages) >= max_pages or time.monotonic() > deadline:
            report.truncated = True
            break
        url, referrer = queue.popleft()
        status, ctype, body = _fetch(url, resolve, cafile, timeout)
        hops = 0
        while ctype == "redirect" and urlsplit(body)[:2] == origin and hops < 5:
            status, ctype, body = _fetch(body, resolve, cafile, timeout)
            hops += 1
        report.pages[url] = status
        if status >= 400:
            report.broken.append((referrer, url, status))
            continue
        if "html" not in ctype or urlsplit(url).path.startswith(no_follow):
            continue
        for href in links_of(body):
            absolute = urldefrag(urljoin(url, href))[0]
            if is_placeholder(href, absolute):
                report.placeholders.append((url, href))
                continue
            parts = urlsplit(absolute)
            if parts.scheme in ("mailto", "tel"):
                continue
            if parts[:2] != origin:
                report.external.add(absolute)
                continue
            if SKIP_PATHS.match(parts.path) or absolute in seen:
                continue
            seen.add(absolute)
            queue.append((absolute, url))
    return report

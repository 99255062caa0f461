"""The page-check helpers of the end-to-end tests, proven on loopback: axe-core in Debian's
headless Chromium finds a known violation and passes a clean page; the link follower finds a
broken link and a theme's placeholder links, and stays on its origin within its bounds.

A small static site is served by http.server on 127.0.0.1 (a port of its own, stopped after).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.browser import AXE_JS, SERIOUS, Browser, BrowserError
from tests.helpers.links import crawl
from tests.helpers.loopback import http_server

CLEAN = """<!DOCTYPE html><html lang="el"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Δήμος</title></head>
<body><header><p><a href="/">Δήμος</a></p><nav aria-label="Κύρια πλοήγηση"><ul>
<li><a href="/news.html">Νέα</a></li><li><a href="/contact.html">Επικοινωνία</a></li></ul></nav>
</header><main><h1>Καλώς ήρθατε</h1><p>Κείμενο με καλή αντίθεση.</p>
<img src="/logo.svg" alt="Λογότυπο"><form><label for="q">Αναζήτηση</label>
<input id="q" name="q" type="search"><button type="submit">Αναζήτηση</button></form></main>
<footer><a href="/privacy.html">Πολιτική απορρήτου</a></footer></body></html>"""
#: serious/critical on purpose: an image without alt text, grey on grey text, an unlabelled
#: input, and no lang attribute
BAD = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Bad</title></head><body><main>
<h1>Demo</h1><img src="/logo.svg"><p style="color:#bbb;background:#ccc">faint text</p>
<input type="text"><a href="#">About</a> <a href="/shop/">Shop</a>
<a href="/missing.html">Gone</a> <a href="https://wordpress.org/">WordPress</a>
<a href="http://elsewhere.test/x">Elsewhere</a></main></body></html>"""
LOGO = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(CLEAN, encoding="utf-8")
    (root / "bad.html").write_text(BAD, encoding="utf-8")
    (root / "logo.svg").write_text(LOGO)
    for name in ("news", "contact", "privacy"):
        page = CLEAN.replace("Καλώς ήρθατε", name)
        page = page.replace('href="/contact.html"', 'href="/bad.html"')
        (root / f"{name}.html").write_text(page, encoding="utf-8")
    handler = functools.partial(QuietHandler, directory=str(root))
    with http_server(handler) as url:
        yield url


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    assert shutil.which("chromium"), "chromium is missing (scripts/system-packages.txt)"
    assert AXE_JS.is_file(), f"axe-core is missing at {AXE_JS}: run scripts/lab install"
    with Browser(tmp_path / "profile", timeout=60) as b:
        yield b


def test_axe_reports_the_known_violations(browser: Browser, site: str) -> None:
    browser.goto(f"{site}/bad.html")
    found = {v.id: v for v in browser.axe()}
    assert {"image-alt", "color-contrast", "label", "html-has-lang"} <= set(found), found
    assert found["image-alt"].impact == "critical"
    assert found["image-alt"].targets == ("img",)
    assert found["color-contrast"].impact == "serious"


@pytest.mark.parametrize("width", [1280, 375])
def test_a_clean_page_has_no_serious_violation(
    browser: Browser, site: str, tmp_path: Path, width: int
) -> None:
    browser.goto(f"{site}/", width=width)
    assert browser.evaluate("document.documentElement.lang") == "el"
    assert browser.evaluate("window.innerWidth") == width
    serious = [str(v) for v in browser.axe() if v.impact in SERIOUS]
    assert serious == []
    shot = tmp_path / f"home-{width}.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == width  # the PNG's width


def test_a_page_that_does_not_load_is_an_error(browser: Browser) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrowserError, match="ERR_CONNECTION_REFUSED"):
        browser.goto(f"http://127.0.0.1:{port}/")


def test_link_follower_finds_broken_and_placeholder_links(site: str) -> None:
    report = crawl(f"{site}/", max_pages=20, time_budget=30)
    assert not report.truncated
    assert set(report.pages) == {
        f"{site}/",
        f"{site}/news.html",
        f"{site}/contact.html",
        f"{site}/privacy.html",
        f"{site}/bad.html",
        f"{site}/missing.html",
    }
    assert report.broken == [(f"{site}/bad.html", f"{site}/missing.html", 404)]
    hrefs = sorted(href for _, href in report.placeholders)
    assert hrefs == ["#", "/shop/", "https://wordpress.org/"]
    assert report.external == {"http://elsewhere.test/x"}  # listed, never fetched


def test_link_follower_does_not_follow_into_another_application(site: str) -> None:
    report = crawl(f"{site}/news.html", no_follow=("/bad.html",), time_budget=30)
    assert report.pages[f"{site}/bad.html"] == 200
    assert f"{site}/missing.html" not in report.pages and not report.placeholders


def test_link_follower_on_a_clean_site_and_its_bound(site: str) -> None:
    report = crawl(f"{site}/privacy.html", max_pages=2, time_budget=30)
    assert report.truncated and len(report.pages) == 2
    clean = crawl(f"{site}/news.html".replace("news", "index"), max_pages=3, time_budget=30)
    assert clean.truncated  # bad.html is reachable through news.html: bounded before it
    assert all(status == 200 for status in clean.pages.values())


def test_the_installed_axe_is_the_pinned_one() -> None:
    """scripts/lab install fetches the version the helper names; the installed one is it."""
    import json
    import re

    from tests.helpers import browser

    lab = (Path(__file__).resolve().parents[2] / "scripts" / "lab").read_text()
    assert re.search(r"^AXE_VERSION=(\S+)$", lab, re.M)[1] == browser.AXE_VERSION  # type: ignore[index]
    package = json.loads((AXE_JS.parent / "package.json").read_text())
    assert package["version"] == browser.AXE_VERSION

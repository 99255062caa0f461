"""The citizens' portal as a citizen meets it, on the real deployed Hersonissos VM (portal,
open data and e-learning, contact details in the inventory, language el): axe-core in headless
Chromium finds no serious or critical WCAG 2.1 AA violation on the pages the issue lists, every
page is Greek (lang="el", no WordPress demo text) with the legal pages in its footer, the link
follower finds no broken or placeholder link, a consultation comment needs consent and waits for
moderation, the page cache answers anonymous visitors and is purged when a comment is approved,
and a consultation's comments export as CSV.

Screenshots of every page at 1280 and 375 px go to $KALLIKRATIS_TEST_ARTIFACTS/portal-pages/.

Budget (2-core TCG host, one VM): one Chromium for the module (~2 s); each page ~3-6 s the first
time (PHP under TCG), then from the page cache; axe ~1-2 s per page on the host: the pages ~90 s;
the crawl <= 60 s (bounded); the comment, cache and CSV steps ~30 s (PHP over SSH ~5 s each).
Under 4 minutes in all.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployed
from tests.helpers.browser import SERIOUS, Browser
from tests.helpers.chromium import browser_profile
from tests.helpers.links import PinnedHTTPS, crawl

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(os.environ.get("KALLIKRATIS_TEST_ARTIFACTS", "/tmp/kallikratis-test-artifacts"))
SLUG = "hersonissos"
CONSULTATION = "/diavoulefseis/kanonismos-kathariotitas/"
ARTICLE = CONSULTATION + "kanonismos-kathariotitas-arthro-1/"
#: the pages of the issue (and the legal ones): name -> path
PAGES = {
    "home": "/",
    "news-post": "/kalos-irthate/",
    "news": "/nea/",
    "consultations": "/diavoulefseis/",
    "consultation": CONSULTATION,
    "article": ARTICLE,
    "contact": "/epikoinonia/",
    "privacy": "/politiki-aporritou/",
    "accessibility": "/dilosi-prosvasimotitas/",
    "opendata": "/data/",
    "datasette-table": "/data/opendata/budget_lines",
}
WORDPRESS = {n for n in PAGES if not n.startswith(("opendata", "datasette"))}
#: what the stock theme showed: English and demo text that must not be on a Greek page
ENGLISH = re.compile(
    r"\b(Blog|Written by|Leave a Reply|Comments|Read more|Posted|About|FAQs|Shop)\b"
)


@pytest.fixture(scope="module")
def site(fresh: Deployed) -> tuple[str, str]:
    ip, domain = fresh.fleet.sites()[SLUG]
    return ip, domain


@pytest.fixture(scope="module")
def browser(
    fresh: Deployed, site: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    ip, domain = site
    home = tmp_path_factory.mktemp("portal-browser")
    env = browser_profile(home, fresh.fleet.ca_file)
    with Browser(home / "profile", host_rules=f"MAP {domain} {ip}", env=env, timeout=90) as b:
        yield b


def get(
    fresh: Deployed, site: tuple[str, str], path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One anonymous GET from the controller (no cookies), over TLS checked against the CA."""
    ip, domain = site
    ctx = ssl.create_default_context(cafile=str(fresh.fleet.ca_file))
    conn = PinnedHTTPS(ip, 443, domain, ctx, 30)
    try:
        conn.request("GET", path, headers={"Host": domain, **(headers or {})})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def wp_php(fresh: Deployed, site: tuple[str, str], code: str) -> str:
    """PHP run in WordPress on the VM, as www-data (what PHP-FPM runs as)."""
    _, domain = site
    prelude = (
        f"$_SERVER['HTTP_HOST'] = $_SERVER['SERVER_NAME'] = '{domain}'; "
        "$_SERVER['HTTPS'] = 'on'; $_SERVER['REQUEST_URI'] = '/'; "
        "require '/usr/share/wordpress/wp-load.php'; "
    )
    return fresh.fleet.ssh(SLUG, f"sudo -u www-data php -r {shlex.quote(prelude + code)}")


@pytest.mark.parametrize("name", list(PAGES))
def test_page_is_accessible_greek_and_has_the_legal_footer(
    browser: Browser, site: tuple[str, str], name: str
) -> None:
    url = f"https://{site[1]}{PAGES[name]}"
    shots = ARTIFACTS / "portal-pages"
    for width in (1280, 375):
        browser.goto(url, width=width)
        browser.screenshot(shots / f"{SLUG}-{name}-{width}.png")
        serious = [str(v) for v in browser.axe() if v.impact in SERIOUS]
        assert serious == [], f"{name} at {width} px: {serious}"
    if name not in WORDPRESS:
        return
    assert browser.evaluate("document.documentElement.lang") == "el"
    text = browser.evaluate("document.body.innerText")
    assert not ENGLISH.search(text), f"{name}: English on a Greek page: {ENGLISH.search(text)}"
    footer = browser.evaluate(
        "[...document.querySelectorAll('footer a')].map(a => a.pathname).join(' ')"
    )
    for legal in ("/politiki-aporritou/", "/dilosi-prosvasimotitas/", "/epikoinonia/"):
        assert legal in footer, f"{name}: no {legal} in the footer: {footer}"
    nav = browser.evaluate("[...document.querySelectorAll('nav a')].map(a => a.pathname)")
    assert {"/nea/", "/diavoulefseis/", "/data/", "/learn/", "/epikoinonia/"} <= set(nav), nav


def test_contact_details_come_from_the_inventory(fresh: Deployed, site: tuple[str, str]) -> None:
    contact = fresh.fleet.municipalities()[SLUG]["contact"]
    status, _, body = get(fresh, site, "/epikoinonia/")
    assert status == 200
    page = body.decode()
    for key in ("address", "phone", "email", "hours"):
        assert contact[key] in page.replace("&#8211;", "–"), key


def test_no_broken_or_placeholder_link(fresh: Deployed, site: tuple[str, str]) -> None:
    ip, domain = site
    started = time.monotonic()
    report = crawl(
        f"https://{domain}/",
        resolve={domain: ip},
        cafile=fresh.fleet.ca_file,
        max_pages=60,
        time_budget=90,
        no_follow=("/data/", "/learn/"),
    )
    assert not report.broken and not report.placeholders, str(report)
    for path in ("/data/", "/learn/", "/politiki-aporritou/", CONSULTATION, ARTICLE):
        assert f"https://{domain}{path}" in report.pages, path
    assert time.monotonic() - started < 120


def _post_without_consent(fresh: Deployed, site: tuple[str, str], post_id: int) -> int:
    """A comment POSTed without the consent field (a browser's `required` stops it earlier)."""
    ip, domain = site
    fields = {"comment_post_ID": str(post_id), "author": "Δημότης", "email": "d@example.test"}
    fields["comment"] = "Σχόλιο χωρίς συναίνεση"
    ctx = ssl.create_default_context(cafile=str(fresh.fleet.ca_file))
    conn = PinnedHTTPS(ip, 443, domain, ctx, 30)
    try:
        headers = {"Host": domain, "Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/wp-comments-post.php", urllib.parse.urlencode(fields), headers)
        res = conn.getresponse()
        res.read()
        return res.status
    finally:
        conn.close()


def _consultation_id(fresh: Deployed, site: tuple[str, str], path: str) -> int:
    slug_path = path.removeprefix("/diavoulefseis/").strip("/")
    code = f"echo get_page_by_path('{slug_path}', OBJECT, 'consultation')->ID;"
    return int(wp_php(fresh, site, code).strip())


def test_comment_needs_consent_and_waits_for_moderation(
    fresh: Deployed, site: tuple[str, str], browser: Browser
) -> None:
    article_id = _consultation_id(fresh, site, ARTICLE)
    assert _post_without_consent(fresh, site, article_id) == 400
    browser.goto(f"https://{site[1]}{ARTICLE}")
    form = browser.evaluate(
        "(() => { const c = document.getElementById('kallikratis-consent'); "
        "const f = c && c.closest('form'); "
        "return !!(c && c.required && f.querySelector('a[href*=politiki-aporritou]')); })()"
    )
    assert form, "no required consent checkbox with a link to the privacy policy"
    token = f"e2e-{int(time.time())}"
    browser.evaluate(
        "(() => { const f = document.getElementById('commentform'); "
        "f.author.value = 'Δημότης'; f.email.value = 'dimotis@example.test'; "
        f"f.comment.value = 'Σχόλιο {token}'; "
        "document.getElementById('kallikratis-consent').checked = true; "
        "HTMLFormElement.prototype.submit.call(f); })()"
    )
    browser.wait_for("Page.loadEventFired")
    row = wp_php(
        fresh,
        site,
        f"$c = get_comments(['search' => '{token}', 'status' => 'all'])[0]; "
        "$consent = get_comment_meta($c->comment_ID, 'kallikratis_consent', true); "
        "echo $c->comment_approved, ' ', $consent ? 'consent' : 'none', ' ', $c->comment_ID;",
    ).split()
    assert row[:2] == ["0", "consent"], row
    status, _, body = get(fresh, site, ARTICLE)
    assert status == 200 and token not in body.decode(), "a held comment is public"
    # approved by a moderator: the page cache is purged, the comment is public at once
    get(fresh, site, ARTICLE)  # cached again
    wp_php(fresh, site, f"wp_set_comment_status({int(row[2])}, 'approve');")
    status, headers, body = get(fresh, site, ARTICLE)
    assert token in body.decode(), "the approved comment is not shown (stale page cache?)"
    assert headers.get("x-kallikratis-cache") in ("MISS", "EXPIRED"), headers


def test_page_cache_serves_anonymous_visitors(fresh: Deployed, site: tuple[str, str]) -> None:
    get(fresh, site, "/")
    status, headers, _ = get(fresh, site, "/")
    assert status == 200 and headers.get("x-kallikratis-cache") == "HIT", headers
    _, headers, _ = get(fresh, site, "/", {"Cookie": "wordpress_logged_in_x=1"})
    assert headers.get("x-kallikratis-cache") == "BYPASS", headers
    _, headers, _ = get(fresh, site, "/?s=%CE%94%CE%AE%CE%BC%CE%BF%CF%82")
    assert headers.get("x-kallikratis-cache") == "BYPASS", headers
    assert "strict-transport-security" in headers, "security headers kept on cached pages"


def test_static_files_are_compressed_and_long_cached(
    fresh: Deployed, site: tuple[str, str]
) -> None:
    path = "/wp-includes/css/dist/block-library/style.min.css"
    status, headers, _ = get(fresh, site, path, {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("content-encoding") == "gzip", headers
    assert "max-age=2592000" in headers.get("cache-control", ""), headers


def test_consultation_comments_export_as_csv(fresh: Deployed, site: tuple[str, str]) -> None:
    """The editors' export (admin-post.php), run in WordPress as the administrator."""
    out = wp_php(
        fresh,
        site,
        "wp_set_current_user(get_user_by('login', 'kallikratis-admin')->ID); "
        f"$id = {_consultation_id(fresh, site, CONSULTATION)}; $_GET['consultation'] = $id; "
        "$_REQUEST['_wpnonce'] = wp_create_nonce('kallikratis_export_' . $id); "
        "do_action('admin_post_kallikratis_export');",
    )
    rows = list(csv.reader(io.StringIO(out.lstrip("\ufeff"))))
    assert rows[0] == ["article", "comment_id", "date", "author", "status", "comment"]
    assert all(len(r) == 6 for r in rows[1:])


def test_anonymous_pages_never_error(fresh: Deployed, site: tuple[str, str]) -> None:
    for path in ("/no-such-page/", "/?s=test"):
        status, _, body = get(fresh, site, path)
        assert status in (200, 404), (path, status)
        assert 'lang="el"' in body.decode(), path

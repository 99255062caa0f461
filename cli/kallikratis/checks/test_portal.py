"""roles/portal: WordPress (news, announcements, consultations) where enabled, absent elsewhere."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from typing import Any

PHP_FPM = "php8.4-fpm"


def test_portal_services(host: Any, portal_on: bool) -> None:
    for name in ("mariadb", PHP_FPM):
        svc = host.service(name)
        assert svc.is_running is portal_on, f"{name} running={svc.is_running}, portal={portal_on}"
        assert svc.is_enabled is portal_on, f"{name} enabled={svc.is_enabled}, portal={portal_on}"


def test_portal_files(host: Any, spec: dict[str, Any], portal_on: bool) -> None:
    config = host.file(f"/etc/wordpress/config-{spec['domain']}.php")
    snippet = host.file("/etc/nginx/kallikratis.d/portal.conf")
    plugin = host.file("/var/lib/wordpress/wp-content/mu-plugins/kallikratis-portal.php")
    assert config.exists is portal_on
    assert snippet.exists is portal_on
    assert plugin.exists is portal_on
    if portal_on:
        assert config.mode == 0o640 and config.user == "root" and config.group == "www-data"


def test_portal_database(host: Any, portal_on: bool) -> None:
    with host.sudo():
        exists = host.file("/var/lib/mysql/wordpress").is_directory
        assert exists is portal_on
        if portal_on:
            out = host.check_output(
                "mariadb -N -B -e \"SELECT User FROM mysql.user WHERE User='wordpress'\""
            )
            assert out.strip() == "wordpress"


def test_mariadb_not_exposed(host: Any, portal_on: bool) -> None:
    assert not host.socket("tcp://0.0.0.0:3306").is_listening
    if portal_on:
        assert host.socket("unix:///run/mysqld/mysqld.sock").is_listening


def test_rest_api_lists_posts(web: Any, portal_on: bool) -> None:
    res = web.https("/wp-json/wp/v2/posts")
    if not portal_on:
        assert res.status == 404, f"WordPress answers without the portal module: {res.status}"
        return
    assert res.status == 200, res.status
    posts = res.json()
    assert isinstance(posts, list) and posts, "no posts"
    assert all("title" in p and "link" in p for p in posts)


def test_news_categories(web: Any, spec: dict[str, Any], portal_on: bool) -> None:
    res = web.https("/wp-json/wp/v2/categories?per_page=100")
    if not portal_on:
        assert res.status == 404
        return
    names = {html.unescape(c["name"]) for c in res.json()}
    expected = {"el": {"Ανακοινώσεις", "Νέα"}, "en": {"Announcements", "News"}}[spec["language"]]
    assert expected <= names, names


def test_consultations_with_articles_open_for_comments(web: Any, portal_on: bool) -> None:
    res = web.https("/wp-json/wp/v2/consultations?parent=0")
    if not portal_on:
        assert res.status == 404
        return
    assert res.status == 200, res.status
    consultations = res.json()
    assert consultations, "no consultation published"
    parent = consultations[0]
    articles = web.https(f"/wp-json/wp/v2/consultations?parent={parent['id']}&per_page=100").json()
    assert len(articles) >= 2, f"consultation {parent['id']} has {len(articles)} articles"
    closed = [a["id"] for a in articles if a.get("comment_status") != "open"]
    assert not closed, f"articles closed for comments: {closed}"
    page = web.https(f"/?p={articles[0]['id']}&post_type=consultation")
    assert page.status in (200, 301), page.status


def test_site_in_greek_with_display_name(web: Any, spec: dict[str, Any], portal_on: bool) -> None:
    res = web.https("/wp-json/")
    if not portal_on:
        assert res.status == 404
        return
    info = res.json()
    assert html.unescape(info["name"]) == spec["display_name"]
    language = spec["language"]
    home = web.https("/")
    assert f'lang="{language}' in home.text


def test_wp_admin_behind_login(web: Any, portal_on: bool, spec: dict[str, Any]) -> None:
    """Behind the log-in page, and behind the admin allow-list (admin_allow) too: when the
    controller (where verify's requests come from) is not on it, nginx answers 403."""
    res = web.https("/wp-admin/")
    if not portal_on:
        assert res.status == 404
        return
    if not spec.get("admin_allowed", True):
        assert res.status == 403, f"/wp-admin/ outside admin_allow: HTTP {res.status}"
        assert web.https("/wp-login.php").status == 403
        return
    assert res.status == 302 and "wp-login.php" in res.headers.get("location", "")


#: the footer's legal links, as each language names them
LEGAL_LINKS = {
    "el": ("Επικοινωνία", "Πολιτική απορρήτου", "Δήλωση προσβασιμότητας"),
    "en": ("Contact", "Privacy policy", "Accessibility statement"),
}
FOOTER_LINK_RE = re.compile(r'<a href="https://[^/"]+(/[^"]*)"[^>]*>([^<]+)</a>')


def test_footer_links_the_published_legal_pages(
    web: Any, spec: dict[str, Any], portal_on: bool
) -> None:
    if not portal_on:
        return
    home = web.https("/")
    assert home.status == 200, home.status
    footer = home.text.rsplit("<footer", 1)[-1]
    links = {html.unescape(label): path for path, label in FOOTER_LINK_RE.findall(footer)}
    for label in LEGAL_LINKS[spec["language"]]:
        assert label in links, f"no footer link {label!r}: {sorted(links)}"
        page = web.https(links[label])
        assert page.status == 200, f"{label} ({links[label]}): HTTP {page.status}"
        assert f'lang="{spec["language"]}' in page.text


def test_page_cache_answers_anonymous_visitors(web: Any, portal_on: bool) -> None:
    if not portal_on:
        return
    web.https("/")
    again = web.https("/")
    # from the cache: HIT, or UPDATING when the entry had just expired and is being refreshed
    # in the background (fastcgi_cache_background_update; seen on real VMs after a patch run)
    assert again.headers.get("x-kallikratis-cache") in ("HIT", "UPDATING"), again.headers
    assert "strict-transport-security" in again.headers
    logged_in = web.https("/", {"Cookie": "wordpress_logged_in_check=1"})
    assert logged_in.headers.get("x-kallikratis-cache") == "BYPASS", logged_in.headers


def test_static_files_compressed_and_cached(web: Any, portal_on: bool) -> None:
    if not portal_on:
        return
    css = web.https(
        "/wp-includes/css/dist/block-library/style.min.css", {"Accept-Encoding": "gzip"}
    )
    assert css.status == 200, css.status
    assert css.headers.get("content-encoding") == "gzip", css.headers
    assert "max-age=" in css.headers.get("cache-control", ""), css.headers


class _JsonLd(HTMLParser):
    """The text of every <script type="application/ld+json"> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and dict(attrs).get("type") == "application/ld+json":
            self._inside = True
            self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.blocks[-1] += data


def json_ld(page: str) -> list[Any]:
    parser = _JsonLd()
    parser.feed(page)
    return [json.loads(block) for block in parser.blocks]


def test_home_page_describes_the_municipality_in_json_ld(
    web: Any, spec: dict[str, Any], portal_on: bool
) -> None:
    """schema.org GovernmentOrganization in the <head>: name, area, URL, the hub as network."""
    if not portal_on:
        return
    home = web.https("/")
    assert home.status == 200, home.status
    head = home.text.split("</head>", 1)[0]
    found = [d for d in json_ld(head) if d.get("@type") == "GovernmentOrganization"]
    assert len(found) == 1, f"{len(found)} GovernmentOrganization JSON-LD blocks in <head>"
    org = found[0]
    url = f"https://{spec['domain']}/"
    assert org["@context"] == "https://schema.org"
    assert org["name"] == spec["display_name"], org["name"]
    assert org["url"] == url, org["url"]
    assert org["areaServed"] == {"@type": "AdministrativeArea", "name": spec["display_name"]}
    hub = spec.get("hub") or {}
    if hub:
        assert org["memberOf"]["url"] == hub["url"], org.get("memberOf")
        assert org["memberOf"]["name"] == hub["name"], org.get("memberOf")
    else:
        assert "memberOf" not in org, "a hub link in a fleet without a hub"

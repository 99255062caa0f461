"""The interoperability hub on real VMs: the shared fleet has no hub (a fourth VM for the whole
session does not fit CI's time), so this module onboards one (`kallikratis onboard hub`: a
central VM is onboarded alone), uses it against the shared portals, and destroys it again.

On hersonissos' portal a post and a consultation (two articles, one approved comment) are
written through WordPress's own API; `kallikratis hub harvest --json` reports them new; both are
on the hub's pages and in the region's Atom feed (feedparser, no bozo), the consultation with
its comment count and never the comment. A CSV added to hersonissos' open data becomes one more
`dcat:Dataset` in the hub's catalog (rdflib) after `deploy hersonissos --only
opendata,portal` and a harvest. The
portals publish their schema.org GovernmentOrganization, hersonissos (deployed once the hub was
in the inventory) with the hub as its network. With nginx stopped on archanes-asterousia the
harvest still completes for hersonissos and marks archanes-asterousia stale (exit 5). A headless
Chromium (trusting the fleet CA only, the hub's name mapped to its address) saves the hub's home
page to docs/hub-home-e2e.png.

Budget (2-core TCG host): onboard of the hub (up ~80-120 s, first deploy of base + hub ~4-6 min,
verify ~1 min), the redeploy of hersonissos ~2-3 min, four harvests ~10 s each, PHP over SSH
~5 s per step, Chromium ~10 s, destroy ~10 s, the revert of the shared fleet ~30 s: 10-13 min.
The harvest timer is stopped on the hub once it is up, so every harvest here is the test's own.
"""

from __future__ import annotations

import json
import shlex
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser
import pytest
import rdflib
import yaml
from rdflib.namespace import DCAT, DCTERMS, RDF

from tests.e2e.conftest import ROOT, Deployed, Fleet
from tests.helpers.browser import Browser
from tests.helpers.chromium import browser_profile
from tests.helpers.links import PinnedHTTPS

pytestmark = pytest.mark.e2e
HUB = "hub"
SLUG = "hersonissos"  # every module on: the post, the consultation and the new CSV go here
DOWN = "archanes-asterousia"  # its nginx is stopped for the stale harvest
SCREENSHOT = ROOT / "docs" / "hub-home-e2e.png"
HARVEST_TIMEOUT = 600
ONBOARD_TIMEOUT = 2400
DEPLOY_TIMEOUT = 1800


@dataclass
class HubLab:
    fleet: Fleet
    ip: str
    domain: str
    sites: dict[str, tuple[str, str]]  # slug -> (ip, domain), the hub included

    def get(self, path: str, slug: str = HUB) -> tuple[int, str]:
        """An anonymous GET from the controller, TLS checked against the fleet CA only."""
        ip, domain = self.sites[slug]
        ctx = ssl.create_default_context(cafile=str(self.fleet.ca_file))
        conn = PinnedHTTPS(ip, 443, domain, ctx, 60)
        try:
            conn.request("GET", path, headers={"Host": domain})
            res = conn.getresponse()
            return res.status, res.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def harvest(self, *, expect: int = 0) -> dict[str, dict[str, Any]]:
        """`kallikratis hub harvest --json`: the report per municipality (exit 5: some stale)."""
        done = self.fleet.kk("hub", "harvest", "--json", check=False, timeout=HARVEST_TIMEOUT)
        assert done.returncode == expect, (
            done.returncode,
            done.stdout[-2000:],
            done.stderr[-2000:],
        )
        return {m["slug"]: m for m in json.loads(done.stdout)["municipalities"]}


def _add_hub(fleet: Fleet) -> None:
    """The shipped crete entry of the hub, put back into the e2e inventory."""
    data = yaml.safe_load(fleet.hosts_yml.read_text())
    central = data["all"]["children"]["central"]["hosts"]
    central[HUB] = {"central_roles": [HUB]}
    fleet.hosts_yml.write_text(yaml.safe_dump(data, allow_unicode=True))


@pytest.fixture(scope="module")
def hub(fresh: Deployed) -> Iterator[HubLab]:
    fleet = fresh.fleet
    _add_hub(fleet)
    try:
        fleet.kk("onboard", HUB, timeout=ONBOARD_TIMEOUT)  # up, deploy, verify (test_hub checks)
        # every harvest from here on is the test's own (the first deploy ran one already)
        fleet.ssh(HUB, "sudo systemctl stop kallikratis-hub-harvest.timer")
        sites = fleet.sites()
        ip, domain = sites[HUB]
        assert domain == f"hub.{yaml.safe_load(fleet.fleet_yml.read_text())['fleet_domain']}"
        yield HubLab(fleet, ip, domain, sites)
    finally:
        # before `fresh` puts the pristine inventory (without the hub) back
        fleet.kk("destroy", HUB, "--yes", "--no-final-backup", timeout=600)


def wp_php(lab: HubLab, code: str) -> str:
    """PHP inside hersonissos' WordPress, as www-data (what PHP-FPM runs as)."""
    domain = lab.sites[SLUG][1]
    prelude = (
        f"$_SERVER['HTTP_HOST'] = $_SERVER['SERVER_NAME'] = '{domain}'; "
        "$_SERVER['HTTPS'] = 'on'; $_SERVER['REQUEST_URI'] = '/'; "
        "require '/usr/share/wordpress/wp-load.php'; "
    )
    return lab.fleet.ssh(SLUG, f"sudo -u www-data php -r {shlex.quote(prelude + code)}").strip()


@dataclass
class Content:
    post: str  # titles, unique per run
    consultation: str
    comment: str
    report: dict[str, dict[str, Any]]  # the harvest after they were written


@pytest.fixture(scope="module")
def content(hub: HubLab) -> Content:
    tag = uuid.uuid4().hex[:8]
    post, consultation = f"ΔΗΜΟΤΙΚΟ ΣΥΜΒΟΥΛΙΟ e2e {tag}", f"Διαβούλευση e2e {tag}"
    comment = f"Σχόλιο πολίτη e2e {tag}"
    out = wp_php(
        hub,
        f'$p = wp_insert_post(["post_title" => "{post}", "post_status" => "publish",'
        ' "post_content" => "<p>Νέα του δήμου.</p>"], true);'
        f' $c = wp_insert_post(["post_type" => "consultation", "post_title" => "{consultation}",'
        ' "post_status" => "publish", "post_content" => "<p>Σχέδιο σε διαβούλευση.</p>",'
        ' "meta_input" => ["kallikratis_deadline" =>'
        ' wp_date("Y-m-d H:i", time() + 20 * DAY_IN_SECONDS)]], true);'
        " $a = [];"
        " foreach ([1, 2] as $n) {"
        ' $a[] = wp_insert_post(["post_type" => "consultation", "post_parent" => $c,'
        ' "post_title" => "Άρθρο $n", "menu_order" => $n, "post_status" => "publish",'
        ' "comment_status" => "open", "post_content" => "<p>Άρθρο $n.</p>"], true); }'
        # a citizen's comment waits for moderation; the moderator approves it (purges the cache)
        f' $k = wp_insert_comment(["comment_post_ID" => $a[0], "comment_content" => "{comment}",'
        ' "comment_author" => "Πολίτης e2e", "comment_author_email" => "citizen@example.gr",'
        ' "comment_approved" => 0]);'
        ' wp_set_comment_status($k, "approve");'
        " echo json_encode([$p, $c, $a, $k]);",
    )
    ids = json.loads(out.splitlines()[-1])
    assert all(ids[:2]) and all(ids[2]) and ids[3], out
    return Content(post, consultation, comment, hub.harvest())


def test_the_post_and_the_consultation_are_harvested_as_new(content: Content) -> None:
    mine = content.report[SLUG]
    assert (mine["new"], mine["changed"], mine["removed"], mine["stale"]) == (2, 0, 0, False)
    others = [m for slug, m in content.report.items() if slug != SLUG]
    assert others and all((m["new"], m["changed"], m["stale"]) == (0, 0, False) for m in others)


def test_both_are_on_the_hub_pages_and_in_the_region_feed(hub: HubLab, content: Content) -> None:
    status, home = hub.get("/")
    assert status == 200 and content.post in home, "the post is not on the hub's home page"
    status, page = hub.get("/consultations/")
    assert status == 200 and content.consultation in page
    row = page.split(content.consultation, 1)[1].split("</tr>", 1)[0]
    assert "<td>1</td>" in row, f"comment count 1 expected in {row!r}"
    status, feed_text = hub.get("/feed.atom")
    assert status == 200
    feed = feedparser.parse(feed_text)
    assert not feed.bozo, feed.get("bozo_exception")
    entries = {e.title: e for e in feed.entries}
    assert content.post in entries and content.consultation in entries
    assert "Σχόλια (comments): 1" in entries[content.consultation].summary
    for text in (home, page, feed_text):  # the count, never the comment or its author
        assert content.comment not in text and "Πολίτης e2e" not in text
        assert "citizen@example.gr" not in text


def _datasets(hub: HubLab) -> dict[str, str]:
    """The hub's DCAT catalog: dataset IRI -> title (one page: far below 1,000 datasets)."""
    status, text = hub.get("/catalog.ttl")
    assert status == 200, status
    graph = rdflib.Graph().parse(data=text, format="turtle")
    return {
        str(d): str(graph.value(d, DCTERMS.title)) for d in graph.subjects(RDF.type, DCAT.Dataset)
    }


@dataclass
class NewCsv:
    before: dict[str, str]
    after: dict[str, str]
    report: dict[str, dict[str, Any]]
    table: str


@pytest.fixture(scope="module")
def new_csv(hub: HubLab, content: Content) -> NewCsv:
    before = _datasets(hub)
    table = f"kadoi_anakyklosis_{uuid.uuid4().hex[:6]}"
    data = hub.fleet.inventory / "host_vars" / SLUG / "data"
    (data / f"{table}.csv").write_text(
        "περιοχή,κάδοι\nΓούβες,42\nΧερσόνησος,57\nΜάλια,38\n", encoding="utf-8"
    )
    # the two roles concerned (a partial deploy): opendata builds the new table, portal gives
    # the organization its network, the hub (the inventory has the hub now)
    hub.fleet.kk("deploy", SLUG, "--only", "opendata,portal", timeout=DEPLOY_TIMEOUT)
    report = hub.harvest()
    return NewCsv(before, _datasets(hub), report, table)


def test_a_new_csv_becomes_one_more_dcat_dataset(new_csv: NewCsv) -> None:
    added = set(new_csv.after) - set(new_csv.before)
    assert len(new_csv.after) == len(new_csv.before) + 1 and len(added) == 1, added
    (iri,) = added
    assert new_csv.table in iri, iri
    assert new_csv.report[SLUG]["new"] == 1 and not new_csv.report[SLUG]["stale"]


class _JsonLd(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inside = tag == "script" and dict(attrs).get("type") == "application/ld+json"
        if self._inside:
            self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.blocks[-1] += data


def organization(page: str) -> dict[str, Any]:
    parser = _JsonLd()
    parser.feed(page.split("</head>", 1)[0])
    found = [json.loads(b) for b in parser.blocks]
    orgs = [o for o in found if o.get("@type") == "GovernmentOrganization"]
    assert len(orgs) == 1, found
    return dict(orgs[0])


def test_portals_publish_their_organization_with_the_hub(hub: HubLab, new_csv: NewCsv) -> None:
    names = {s: m.get("display_name") for s, m in hub.fleet.municipalities().items()}
    for slug in (SLUG, DOWN):
        status, page = hub.get("/", slug)
        assert status == 200, (slug, status)
        org = organization(page)
        domain = hub.sites[slug][1]
        assert org["url"] == f"https://{domain}/" and org["name"] == names[slug]
        assert org["areaServed"] == {"@type": "AdministrativeArea", "name": names[slug]}
    # hersonissos was deployed with the hub in the inventory (new_csv): the hub is its network
    org = organization(hub.get("/", SLUG)[1])
    assert org["memberOf"]["url"] == f"https://{hub.domain}/", org.get("memberOf")
    assert org["memberOf"]["name"]


def test_screenshot_of_the_hub_home_page(
    hub: HubLab, content: Content, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("hub-browser")
    env = browser_profile(home, hub.fleet.ca_file)
    with Browser(
        home / "profile", host_rules=f"MAP {hub.domain} {hub.ip}", env=env, timeout=90
    ) as browser:
        browser.goto(f"https://{hub.domain}/", width=1280)
        assert content.post in browser.evaluate("document.body.innerText")
        browser.screenshot(SCREENSHOT)
    assert Path(SCREENSHOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_stopped_portal_is_stale_and_the_others_complete(
    hub: HubLab, content: Content, new_csv: NewCsv
) -> None:
    """Last: it leaves archanes-asterousia without nginx (the module's revert restarts it)."""
    hub.fleet.ssh(DOWN, "sudo systemctl stop nginx")
    report = hub.harvest(expect=5)
    assert report[DOWN]["stale"] and report[DOWN]["error"], report[DOWN]
    assert not report[SLUG]["stale"] and report[SLUG]["error"] is None
    status, home = hub.get("/")
    assert status == 200 and content.post in home  # the others' harvest went on
    sections = {
        slug: section
        for section in home.split("<section>")[1:]
        for slug in (SLUG, DOWN)
        if f'href="/{slug}/feed.atom"' in section
    }
    assert set(sections) == {SLUG, DOWN}, list(sections)
    assert '<p class="stale">' in sections[DOWN], "archanes-asterousia is not marked stale"
    assert '<p class="stale">' not in sections[SLUG]

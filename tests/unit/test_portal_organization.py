"""The portal's schema.org GovernmentOrganization JSON-LD (mu-plugin kallikratis-organization):
rendered with Ansible's own templating, run by the real PHP interpreter (WordPress's hooks
replaced by a recorder), its <head> output parsed like a browser's tokenizer would and then by
the verify check itself. A hostile display name (quotes, </script>, <!--, Greek) stays one JSON
string value. The inventory side: a municipality learns the hub's name and URL."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kallikratis.checks import test_portal as portal_checks
from kallikratis.stackvars import municipality_vars
from kallikratis.verify import write_spec
from support import SLUGS, InventoryCopy
from test_portal_php import PHP, PLUGINS, PORTAL, php_lint, render

from tests.helpers.hostile import HOSTILE_DISPLAY_NAME

TEMPLATE = f"{PLUGINS.relative_to(PORTAL / 'templates')}/kallikratis-organization.php.j2"
DOMAIN = "hersonissos.crete.kallikratis.test"
#: what validation lets through, plus what would close the <script> or open an HTML comment
HOSTILE = HOSTILE_DISPLAY_NAME + " </script><script>alert(1)</script> <!-- Ηράκλειο </SCRIPT >"
HUB = {
    "name": 'Κόμβος "διαλειτουργικότητας" </script>',
    "url": "https://hub.crete.kallikratis.test/",
}

#: WordPress's hooks recorded, wp_json_encode as WordPress calls json_encode; then wp_head
DRIVER = """<?php
define('ABSPATH', '/usr/share/wordpress/');
$hooks = [];
function add_action($hook, $callback, ...$rest) { $GLOBALS['hooks'][$hook][] = $callback; }
function add_filter(...$args) {}
function wp_json_encode($data, $options = 0, $depth = 512) {
    return json_encode($data, $options, $depth);
}
require %s;
foreach ($hooks['wp_head'] ?? [] as $callback) { $callback(); }
"""


def head_of(tmp_path: Path, **extra: Any) -> str:
    """What the plugin prints in the <head> for these role variables."""
    plugin = tmp_path / "kallikratis-organization.php"
    plugin.write_text(render(TEMPLATE, "el", **extra), encoding="utf-8")
    assert php_lint(plugin).returncode == 0
    driver = tmp_path / "driver.php"
    driver.write_text(DRIVER % json.dumps(str(plugin)), encoding="utf-8")
    res = subprocess.run(
        [str(PHP), str(driver)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.tags.append("/" + tag)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def tags_of(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def organization(page: str) -> dict[str, Any]:
    found = [d for d in portal_checks.json_ld(page) if d.get("@type") == "GovernmentOrganization"]
    assert len(found) == 1, page
    return dict(found[0])


def test_a_hostile_name_stays_one_json_string(tmp_path: Path) -> None:
    head = head_of(tmp_path, kallikratis_display_name=HOSTILE, kallikratis_hub=HUB)
    # one element, opened and closed once: nothing in a value ended it or started another
    assert tags_of(head).tags == ["script", "/script"], head
    assert not tags_of(head).comments
    assert "</script" not in head.lower().replace("</script>\n", "", 1)
    org = organization(head)
    assert org["name"] == HOSTILE
    assert org["areaServed"] == {"@type": "AdministrativeArea", "name": HOSTILE}
    assert org["memberOf"]["name"] == HUB["name"]
    assert "Ηράκλειο" in head  # Greek as UTF-8, not \\u escapes


def test_the_organization_names_its_url_area_and_hub(tmp_path: Path) -> None:
    org = organization(head_of(tmp_path, kallikratis_hub=HUB))
    assert org["@context"] == "https://schema.org"
    assert org["@id"] == f"https://{DOMAIN}/#organization"  # the hub's DCAT publisher IRI
    assert org["url"] == f"https://{DOMAIN}/"
    assert org["knowsLanguage"] == "el"
    assert org["memberOf"] == {
        "@type": "Organization",
        "@id": HUB["url"],
        "name": HUB["name"],
        "url": HUB["url"],
    }
    assert org["logo"] == f"https://{DOMAIN}/logo.png"  # the branding's /logo.png, absolute
    assert "sameAs" not in org


def test_without_hub_logo_or_profiles_the_keys_are_absent(tmp_path: Path) -> None:
    org = organization(head_of(tmp_path, kallikratis_branding={"colour": "#1f4e79", "logo": ""}))
    assert {"memberOf", "logo", "sameAs"}.isdisjoint(org), org
    profiles = ["https://www.facebook.com/hersonissos", "https://el.wikipedia.org/wiki/X"]
    org = organization(head_of(tmp_path, portal_same_as=profiles))
    assert org["sameAs"] == profiles


def _check(page: str, spec: dict[str, Any]) -> None:
    """The verify check, on a page served by a stand-in for the VM's web server."""
    web = SimpleNamespace(
        https=lambda path: SimpleNamespace(status=200, text=page) if path == "/" else None
    )
    portal_checks.test_home_page_describes_the_municipality_in_json_ld(web, spec, True)


def _spec(**values: Any) -> dict[str, Any]:
    return {"domain": DOMAIN, "display_name": HOSTILE, "hub": HUB, **values}


def test_the_verify_check_passes_on_the_plugin_s_page(tmp_path: Path) -> None:
    head = head_of(tmp_path, kallikratis_display_name=HOSTILE, kallikratis_hub=HUB)
    page = f"<!DOCTYPE html><html lang='el'><head>{head}</head><body></body></html>"
    _check(page, _spec())


@pytest.mark.parametrize(
    "spec",
    [
        _spec(display_name="Δήμος Ηρακλείου"),  # another name
        _spec(domain="heraklion.crete.kallikratis.test"),  # another URL
        _spec(hub={"name": HUB["name"], "url": "https://hub.other.test/"}),  # another hub
        _spec(hub={}),  # a hub link where the fleet has none
    ],
)
def test_the_verify_check_fails_on_a_wrong_organization(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    head = head_of(tmp_path, kallikratis_display_name=HOSTILE, kallikratis_hub=HUB)
    with pytest.raises(AssertionError):
        _check(f"<html><head>{head}</head><body></body></html>", spec)


def test_the_verify_check_fails_without_json_ld_in_the_head(tmp_path: Path) -> None:
    head = head_of(tmp_path, kallikratis_display_name=HOSTILE, kallikratis_hub=HUB)
    with pytest.raises(AssertionError):
        _check("<html><head></head><body></body></html>", _spec())
    with pytest.raises(AssertionError):  # in the body is not in the <head>
        _check(f"<html><head></head><body>{head}</body></html>", _spec())
    broken = '<html><head><script type="application/ld+json">{"@type": </script></head></html>'
    with pytest.raises(json.JSONDecodeError):
        _check(broken, _spec())


def test_municipalities_learn_the_hub_s_name_and_url(inv: InventoryCopy, state_dir: Path) -> None:
    fleet = inv.load()
    tenant = fleet.get(SLUGS[0])
    assert municipality_vars(fleet, tenant, state_dir)["kallikratis_hub"] == {}
    inv.add_central("hub", central_roles=["hub"], display_name="Κόμβος δήμων Κρήτης")
    fleet = inv.load()
    values = municipality_vars(fleet, fleet.get(SLUGS[0]), state_dir)
    assert values["kallikratis_hub"] == {
        "name": "Κόμβος δήμων Κρήτης",
        "url": f"https://{fleet.get('hub').domain}/",
    }
    assert "kallikratis_hub" not in municipality_vars(fleet, fleet.get("hub"), state_dir)
    spec = json.loads(write_spec(fleet, list(fleet.municipalities), state_dir).read_text())
    assert spec[SLUGS[0]]["hub"] == values["kallikratis_hub"]
    assert spec["hub"]["hub"] == {}

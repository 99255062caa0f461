"""Comment counts of consultations, both ways: from the portal role's REST field
`kallikratis_comments` (asked in the listing the harvester makes anyway) and, for an older
portal without it, from the comments endpoint's X-WP-Total, one request per open consultation.
Same counts either way; the requests the field saves are counted run by run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hubsupport import write_config
from kallikratis_hub import harvest
from test_hub_harvest import rows
from test_portal_php import PHP, PLUGINS, PORTAL, render

from tests.helpers.loopback import http_server
from tests.helpers.portalstandin import Portal, Region

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # consultation 60 open, 50 closed
COMMENTS = "/wp-json/wp/v2/comments"


@pytest.fixture
def region() -> Iterator[tuple[Region, str]]:
    reg = Region()
    with http_server(reg.handler()) as base:
        yield reg, base


def counts(cfg: harvest.Config, slug: str) -> dict[int, int]:
    sql = "SELECT wp_id, comments FROM item WHERE slug = ? AND kind = 'consultation'"
    return {r["wp_id"]: r["comments"] for r in rows(cfg, sql, slug)}


def run(cfg: harvest.Config, portals: dict[str, Portal]) -> dict[str, tuple[int, int]]:
    """One harvest: per portal (all requests, requests to the comments endpoint)."""
    for p in portals.values():
        p.hits.clear()
    outcomes = harvest.run(cfg, NOW)
    assert not [o for o in outcomes if o.stale], [o.error for o in outcomes]
    return {slug: (len(p.hits), sum(COMMENTS in h for h in p.hits)) for slug, p in portals.items()}


def test_the_field_gives_the_same_counts_and_saves_the_requests(region, tmp_path: Path) -> None:
    reg, base = region
    portals = {"hersonissos": Portal(comments_field=True), "older": Portal()}
    reg.portals.update(portals)
    cfg = write_config(tmp_path, base, list(portals))

    first = run(cfg, portals)
    assert counts(cfg, "hersonissos") == counts(cfg, "older") == {60: 3 + 4 + 1, 50: 7}
    # the older portal: open 60 and closed 50 (first seen) asked one by one; with the field none
    assert first["older"][1] == 2 and first["hersonissos"][1] == 0
    assert first["older"][0] - first["hersonissos"][0] == 2  # requests saved, nothing else differs
    assert any("kallikratis_comments" in h for h in portals["hersonissos"].hits)

    second = run(cfg, portals)
    assert second["older"][1] == 1 and second["hersonissos"][1] == 0  # only 60 is open
    assert second["older"][0] - second["hersonissos"][0] == 1

    # new approved comments on an article of 60, and a late one on the closed 50
    for p in portals.values():
        p.comments[61] += 2
        p.comments[50] += 1
    third = run(cfg, portals)
    assert third["older"][0] - third["hersonissos"][0] == 1
    assert counts(cfg, "hersonissos") == {60: 10, 50: 8}  # the field sees closed ones too
    assert counts(cfg, "older") == {60: 10, 50: 7}  # a closed count froze when it closed
    (o,) = [o for o in harvest.run(cfg, NOW) if o.slug == "hersonissos"]
    assert (o.new, o.changed, o.removed) == (0, 0, 0)


def test_a_changed_count_is_a_change_of_the_consultation(region, tmp_path: Path) -> None:
    reg, base = region
    portal = reg.portals["viannos"] = Portal(comments_field=True)
    cfg = write_config(tmp_path, base, ["viannos"])
    harvest.run(cfg, NOW)
    portal.comments[62] += 1
    outcome = harvest.run(cfg, NOW)[0]
    assert (outcome.new, outcome.changed, outcome.removed) == (0, 1, 0)
    assert counts(cfg, "viannos")[60] == 9


@pytest.mark.parametrize("bad", ["7", -1, True, None, 2.5])
def test_a_malformed_count_makes_the_portal_stale(region, tmp_path: Path, bad: object) -> None:
    reg, base = region
    portal = Portal()
    portal.consultations = [{**c, "kallikratis_comments": bad} for c in portal.consultations]
    reg.portals["phaistos"] = portal
    reg.portals["archanes"] = Portal(comments_field=True)
    cfg = write_config(tmp_path, base, ["phaistos", "archanes"])
    outcomes = {o.slug: o for o in harvest.run(cfg, NOW)}
    assert outcomes["phaistos"].stale and "kallikratis_comments" in outcomes["phaistos"].error
    assert not outcomes["archanes"].stale  # the others go on


def test_no_personal_data_either_way(region, tmp_path: Path) -> None:
    reg, base = region
    reg.portals["hersonissos"] = Portal(comments_field=True)
    reg.portals["older"] = Portal()
    cfg = write_config(tmp_path, base, ["hersonissos", "older"])
    harvest.run(cfg, NOW)
    db = (cfg.state_dir / "hub.db").read_bytes()
    assert "Ελένη".encode() not in db and "Σχόλιο".encode() not in db


#: WordPress's functions the REST field touches, over a tiny table of posts and counts:
#: consultation 60 (3 comments) with articles 61 (4) and 62 (1), consultation 50 (7)
WP_STUBS = """<?php
define('ABSPATH', '/usr/share/wordpress/');
final class WP_Post { public int $ID = 0; public int $post_parent = 0; }
$hooks = []; $fields = [];
$posts = [60 => 0, 61 => 60, 62 => 60, 50 => 0];
$comments = [60 => 3, 61 => 4, 62 => 1, 50 => 7];
function add_action($hook, $callback, ...$rest) { $GLOBALS['hooks'][$hook][] = $callback; }
function add_filter(...$args) {}
function register_rest_field($type, $name, $args) { $GLOBALS['fields'][] = [$type, $name, $args]; }
function get_post($id) {
    $id = is_object($id) ? $id->ID : (int) $id;
    if (!isset($GLOBALS['posts'][$id])) { return null; }
    $post = new WP_Post();
    [$post->ID, $post->post_parent] = [$id, $GLOBALS['posts'][$id]];
    return $post;
}
function get_comments_number($post) { return (string) $GLOBALS['comments'][$post->ID]; }
function get_children($query) {
    $out = [];
    foreach ($GLOBALS['posts'] as $id => $parent) {
        if ($parent === $query['post_parent']) { $out[$id] = get_post($id); }
    }
    return $out;
}
require %s;
foreach ($hooks['rest_api_init'] ?? [] as $callback) { $callback(); }
$out = [];
foreach ($fields as [$type, $name, $args]) {
    $values = [];
    foreach ([60, 61, 62, 50, 99] as $id) { $values[$id] = ($args['get_callback'])(['id' => $id]); }
    $out[] = ['type' => $type, 'name' => $name, 'update' => $args['update_callback'],
              'schema' => $args['schema'], 'values' => $values];
}
echo json_encode($out);
"""


def test_the_portal_s_rest_field_counts_a_consultation_and_its_articles(tmp_path: Path) -> None:
    """The consultations plugin as the role renders it, run by PHP over WordPress stand-ins:
    the field the harvester reads is registered read-only and sums what the pages sum."""
    plugin = tmp_path / "kallikratis-consultations.php"
    template = f"{PLUGINS.relative_to(PORTAL / 'templates')}/kallikratis-consultations.php.j2"
    plugin.write_text(render(template, "el"), encoding="utf-8")
    driver = tmp_path / "driver.php"
    driver.write_text(WP_STUBS % json.dumps(str(plugin)), encoding="utf-8")
    res = subprocess.run(
        [str(PHP), str(driver)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (registered,) = json.loads(res.stdout)
    assert (registered["type"], registered["name"]) == ("consultation", "kallikratis_comments")
    assert registered["update"] is None and registered["schema"]["readonly"] is True
    assert registered["schema"]["type"] == "integer"
    assert registered["values"] == {"60": 3 + 4 + 1, "61": 4, "62": 1, "50": 7, "99": 0}

"""The regional interoperability hub (central VM with central_roles [hub], roles/hub): the
search service and the harvest timer, the search on loopback only, a first harvest done with
its report, and the public endpoints over HTTPS (pages, Atom feed, DCAT-AP catalog, search)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers_data import https_get, listeners, load_spec

SEARCH_PORT = 8091  # roles/hub: hub_search_listen
REPORT = "/var/lib/kallikratis-hub/last-run.json"  # roles/hub: hub_state_dir


@pytest.fixture
def hub(host: Any) -> dict[str, Any]:
    return load_spec(host)


def test_search_runs_and_the_harvest_is_scheduled(host: Any) -> None:
    search = host.service("kallikratis-hub-search")
    assert search.is_running and search.is_enabled, "the hub's search service is not running"
    timer = host.service("kallikratis-hub-harvest.timer")
    assert timer.is_running and timer.is_enabled, "the harvest timer is not active"


def test_search_listens_only_on_loopback(host: Any) -> None:
    assert listeners(host, SEARCH_PORT) == [f"tcp://127.0.0.1:{SEARCH_PORT}"]


def test_a_harvest_has_run(host: Any) -> None:
    report = host.file(REPORT)
    assert report.exists, f"{REPORT} is missing: no harvest has finished"
    data = json.loads(report.content_string)
    assert isinstance(data["municipalities"], list) and data["finished"]


def test_public_endpoints(hub: dict[str, Any]) -> None:
    home = https_get(hub, "/")
    assert home.status == 200 and '<html lang="el">' in home.body.decode("utf-8")
    feed = https_get(hub, "/feed.atom")
    assert feed.status == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    for ext, media in (
        ("ttl", "text/turtle"),
        ("rdf", "application/rdf+xml"),
        ("jsonld", "application/ld+json"),
    ):
        catalog = https_get(hub, f"/catalog.{ext}")
        assert catalog.status == 200, f"/catalog.{ext}: HTTP {catalog.status}"
        assert catalog.headers["content-type"].startswith(media)
    found = https_get(hub, "/search?q=%CE%B4%CE%B7%CE%BC%CE%BF%CF%84%CE%B9%CE%BA%CF%8C&format=json")
    assert found.status == 200 and "results" in found.json()

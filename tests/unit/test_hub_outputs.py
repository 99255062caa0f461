"""The hub's static outputs after a harvest of loopback stand-ins: the DCAT-AP catalog validated
by pyshacl against the DCAT-AP 2.1.1 SHACL shapes (tests/unit/data/hub/dcat-ap, kept with their
source and licence), its three serialisations and its paging; the Atom feeds parsed by
feedparser (no bozo flag); the Greek pages and the search application (escaping, bounds)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest
from hubsupport import SHAPES, closed_port, write_config
from kallikratis_hub import harvest, search
from pyshacl import validate
from rdflib import RDF, Graph, Literal, URIRef
from rdflib import namespace as ns  # not its DCAT at module level: pytest probes it and warns
from rdflib.compare import isomorphic

from tests.helpers.loopback import http_server
from tests.helpers.portalstandin import Portal, Region

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
# rdflib 7.x warns about its own internals (ConjunctiveGraph, Dataset.default_context) thousands
# of times while pyshacl and the JSON-LD parser run
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:rdflib")
HYDRA = "http://www.w3.org/ns/hydra/core#"


@pytest.fixture
def harvested(tmp_path: Path) -> Iterator[tuple[harvest.Config, str]]:
    """Two portals harvested, a third down (stale)."""
    reg = Region()
    with http_server(reg.handler()) as base:
        reg.portals["hersonissos"] = Portal()
        other = reg.portals["malevizi"] = Portal()
        other.posts[0] = {
            **other.posts[0],
            "title": {"rendered": "&lt;script&gt;alert(1)&lt;/script&gt;"},
        }
        down = f"http://127.0.0.1:{closed_port()}/viannos/"
        cfg = write_config(
            tmp_path, base, ["hersonissos", "malevizi", "viannos"], urls={"viannos": down}
        )
        harvest.run(cfg, NOW)
        yield cfg, base


def shapes() -> Graph:
    g = Graph()
    for path in SHAPES:
        g.parse(path, format="turtle")
    return g


def conforms(g: Graph) -> tuple[bool, str]:
    ok, _, text = validate(g, shacl_graph=shapes(), inference="none", abort_on_first=False)
    return bool(ok), str(text)


def test_catalog_conforms_to_dcat_ap(harvested) -> None:
    cfg, base = harvested
    g = Graph().parse(cfg.public_dir / "catalog.ttl", format="turtle")
    ok, report = conforms(g)
    assert ok, report
    datasets = set(g.subjects(RDF.type, ns.DCAT.Dataset))
    assert len(datasets) == 4  # 2 tables x 2 municipalities; the stale one has none yet
    publishers = {g.value(d, ns.DCTERMS.publisher) for d in datasets}
    assert publishers == {
        URIRef(f"{base}/hersonissos/#organization"),
        URIRef(f"{base}/malevizi/#organization"),
    }
    for p in publishers:
        assert (p, RDF.type, ns.FOAF.Agent) in g
        assert g.value(p, ns.FOAF.name) == Literal(
            f"Δήμος {p.split('/')[-2].capitalize()}", lang="el"
        )
    downloads = {str(o) for o in g.objects(None, ns.DCAT.downloadURL)}
    assert (
        f"{base}/hersonissos/data/opendata/council_decisions.csv?_stream=on&_size=max" in downloads
    )
    assert f"{base}/malevizi/data/opendata/budget_lines.json?_shape=array" in downloads


def test_the_shapes_do_catch_a_broken_catalog(harvested) -> None:
    """The validation above can fail: a dataset without its mandatory description, or a
    licence not typed as a licence document (the range shapes), does not pass."""
    cfg, _ = harvested
    g = Graph().parse(cfg.public_dir / "catalog.ttl", format="turtle")
    victim = next(iter(g.subjects(RDF.type, ns.DCAT.Dataset)))
    g.remove((victim, ns.DCTERMS.description, None))
    ok, report = conforms(g)
    assert not ok and "dct:description" in report.replace(str(ns.DCTERMS), "dct:")
    g = Graph().parse(cfg.public_dir / "catalog.ttl", format="turtle")
    g.remove((None, RDF.type, ns.DCTERMS.LicenseDocument))
    ok, report = conforms(g)
    assert not ok and "LicenseDocument" in report


def test_three_serialisations_hold_the_same_graph(harvested) -> None:
    cfg, _ = harvested
    turtle = Graph().parse(cfg.public_dir / "catalog.ttl", format="turtle")
    assert isomorphic(turtle, Graph().parse(cfg.public_dir / "catalog.rdf", format="xml"))
    assert isomorphic(turtle, Graph().parse(cfg.public_dir / "catalog.jsonld", format="json-ld"))


def test_catalog_pages_past_the_page_size(tmp_path: Path) -> None:
    reg = Region()
    with http_server(reg.handler()) as base:
        for slug in ("a", "b"):
            reg.portals[slug] = Portal()
        cfg = write_config(tmp_path, base, ["a", "b"], catalog_page_size=3)
        harvest.run(cfg, NOW)
    out = cfg.public_dir
    assert sorted(p.name for p in out.glob("catalog-page-*.ttl")) == [
        "catalog-page-1.ttl",
        "catalog-page-2.ttl",
    ]
    assert (out / "catalog.ttl").read_bytes() == (out / "catalog-page-1.ttl").read_bytes()
    first = Graph().parse(out / "catalog-page-1.ttl", format="turtle")
    last = Graph().parse(out / "catalog-page-2.jsonld", format="json-ld")
    page1 = URIRef(f"{cfg.hub_url}catalog.ttl?page=1")
    assert first.value(page1, URIRef(HYDRA + "nextPage")) == URIRef(
        f"{cfg.hub_url}catalog.ttl?page=2"
    )
    assert first.value(page1, URIRef(HYDRA + "totalItems")).toPython() == 4
    assert (page1, RDF.type, URIRef(HYDRA + "PagedCollection")) in first
    assert len(set(first.subjects(RDF.type, ns.DCAT.Dataset))) == 3
    assert len(set(last.subjects(RDF.type, ns.DCAT.Dataset))) == 1
    for page in (first, last):
        assert conforms(page)[0]


def test_feeds_parse_without_bozo(harvested) -> None:
    cfg, base = harvested
    region = feedparser.parse(str(cfg.public_dir / "feed.atom"))
    assert region.bozo == 0, region.get("bozo_exception")
    assert len(region.entries) == 10  # 3 posts + 2 consultations, two municipalities
    titles = [e.title for e in region.entries]
    assert "<script>alert(1)</script>" in titles  # text, escaped in the XML, intact for readers
    consultation = next(e for e in region.entries if e.title == "Κανονισμός κοινόχρηστων χώρων")
    assert "2026-12-20 23:59" in consultation.summary and "8" in consultation.summary
    own = feedparser.parse(str(cfg.public_dir / "hersonissos/feed.atom"))
    assert own.bozo == 0 and len(own.entries) == 5
    assert {e.link.split("/")[3] for e in own.entries} == {"hersonissos"}
    stale = feedparser.parse(str(cfg.public_dir / "viannos/feed.atom"))
    assert stale.bozo == 0 and stale.entries == []


def test_pages_show_news_consultations_and_datasets(harvested) -> None:
    cfg, _ = harvested
    home = (cfg.public_dir / "index.html").read_text(encoding="utf-8")
    assert '<html lang="el">' in home
    assert "Εργασίες συντήρησης στο ΔΗΜΟΤΙΚΟ σχολείο" in home
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home and "<script>" not in home
    assert home.count('class="stale"') == 1  # viannos is down
    consultations = (cfg.public_dir / "consultations/index.html").read_text(encoding="utf-8")
    assert consultations.count("Κανονισμός κοινόχρηστων χώρων") == 2
    assert "Προϋπολογισμός 2026" not in consultations  # closed on 2026-10-31
    assert "<td>2026-12-20 23:59</td><td>8</td>" in consultations
    datasets = (cfg.public_dir / "datasets/index.html").read_text(encoding="utf-8")
    assert datasets.count("Αποφάσεις Δημοτικού Συμβουλίου") == 2


def call(app: search.SearchApp, path: str, query: str = "", method: str = "GET") -> tuple[str, Any]:
    got: dict[str, Any] = {}

    def start(status: str, headers: list[tuple[str, str]]) -> None:
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(
        app(
            {
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": method,
                "wsgi.input": io.BytesIO(),
            },
            start,
        )
    )
    return got["status"], (got["headers"], body.decode("utf-8"))


def test_search_application(harvested) -> None:
    cfg, _ = harvested
    app = search.SearchApp(
        cfg.state_dir / "public.db", {"title": cfg.title, "hub_url": cfg.hub_url}
    )
    status, (headers, body) = call(
        app, "/search", "q=%CE%94%CE%97%CE%9C%CE%9F%CE%A4%CE%99%CE%9A%CE%9F"
    )
    assert status == "200 OK" and headers["Content-Type"].startswith("text/html")
    assert body.count("Εργασίες συντήρησης στο ΔΗΜΟΤΙΚΟ σχολείο") == 1  # malevizi renamed it
    assert "Αποφάσεις Δημοτικού Συμβουλίου" in body  # and the tables of both
    status, (_, body) = call(app, "/search", "q=script&format=json")
    results = json.loads(body)["results"]
    assert [r["title"] for r in results] == ["<script>alert(1)</script>"]
    _, (_, page) = call(app, "/search", "q=%3Cscript%3E")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert call(app, "/search", "q=x", "POST")[0].startswith("405")
    assert call(app, "/admin")[0].startswith("404")
    assert call(app, "/search", "&".join(f"a{i}=1" for i in range(10)))[0].startswith("400")
    long_query = "q=" + "δ" * 5000
    assert call(app, "/search", long_query)[0] == "200 OK"


def test_catalog_is_rebuilt_only_when_datasets_change(tmp_path: Path) -> None:
    reg = Region()
    with http_server(reg.handler()) as base:
        portal = reg.portals["hersonissos"] = Portal()
        cfg = write_config(tmp_path, base, ["hersonissos"])
        harvest.run(cfg, NOW)
        first = (cfg.public_dir / "catalog.ttl").stat()
        harvest.run(cfg, NOW)
        again = (cfg.public_dir / "catalog.ttl").stat()
        assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
        portal.database["tables"].append({**portal.database["tables"][0], "name": "waste_bins"})
        harvest.run(cfg, NOW)
    g = Graph().parse(cfg.public_dir / "catalog.ttl", format="turtle")
    assert len(set(g.subjects(RDF.type, ns.DCAT.Dataset))) == 3

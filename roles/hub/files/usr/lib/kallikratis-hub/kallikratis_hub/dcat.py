"""The region's DCAT-AP 2.1 catalog (rdflib): each municipality a foaf:Agent publisher, each of
its Datasette tables a dcat:Dataset with a CSV and a JSON distribution. Written as Turtle,
RDF/XML and JSON-LD at CKAN's paths (/catalog.ttl, /catalog.rdf, /catalog.jsonld); past one page
the graph carries a hydra:PagedCollection like ckanext-dcat's, and page N is
/catalog.<ext>?page=N (nginx maps it to catalog-page-N.<ext>)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from rdflib import RDF, XSD, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF

from kallikratis_hub.harvest import Config

#: part of the catalog's fingerprint: bump it when the graph built from the same data changes
__version__ = "2"
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
FILE_TYPE = Namespace("http://publications.europa.eu/resource/authority/file-type/")
LANG_EL = URIRef("http://publications.europa.eu/resource/authority/language/ELL")
MEDIA = Namespace("http://www.iana.org/assignments/media-types/")
FORMATS = {"ttl": "turtle", "rdf": "xml", "jsonld": "json-ld"}
DISTRIBUTIONS = (("csv", "CSV", "text/csv"), ("json", "JSON", "application/json"))


def typed(g: Graph, uri: URIRef, cls: URIRef) -> URIRef:
    """URI, typed in G: DCAT-AP's range shapes want each object of its class (the EU
    vocabularies' IRIs carry their type in the vocabulary, which a harvester may not load)."""
    g.add((uri, RDF.type, cls))
    return uri


def _when(stamp: str) -> Literal:
    return Literal(stamp.rstrip("Z") + "Z", datatype=XSD.dateTime)


def agent(g: Graph, uri: URIRef, name: str, homepage: str | None) -> URIRef:
    g.add((uri, RDF.type, FOAF.Agent))
    g.add((uri, RDF.type, FOAF.Organization))
    g.add((uri, FOAF.name, Literal(name, lang="el")))
    if homepage:
        g.add((uri, FOAF.homepage, typed(g, URIRef(homepage), FOAF.Document)))
    return uri


def _dataset(g: Graph, cfg: Config, d: dict[str, Any], publisher: URIRef) -> URIRef:
    uri = URIRef(f"{cfg.hub_url}{d['slug']}/datasets/{quote(d['name'], safe='')}")
    description = d["description"] or f"Πίνακας «{d['name']}» — {d['municipality']}"
    g.add((uri, RDF.type, DCAT.Dataset))
    g.add((uri, DCTERMS.identifier, Literal(f"{d['slug']}/{d['name']}")))
    g.add((uri, DCTERMS.title, Literal(d["title"], lang="el")))
    g.add((uri, DCTERMS.description, Literal(description, lang="el")))
    g.add((uri, DCTERMS.publisher, publisher))
    g.add((uri, DCTERMS.language, typed(g, LANG_EL, DCTERMS.LinguisticSystem)))
    g.add((uri, DCTERMS.issued, _when(d["first_seen"])))
    g.add((uri, DCTERMS.modified, _when(d["modified"])))
    g.add((uri, DCAT.landingPage, typed(g, URIRef(d["page_url"]), FOAF.Document)))
    g.add((uri, DCAT.keyword, Literal(d["municipality"], lang="el")))
    for suffix, file_type, media in DISTRIBUTIONS:
        dist = URIRef(f"{uri}/{suffix}")
        g.add((uri, DCAT.distribution, dist))
        g.add((dist, RDF.type, DCAT.Distribution))
        g.add((dist, DCTERMS.title, Literal(f"{d['title']} ({file_type})", lang="el")))
        g.add((dist, DCAT.accessURL, URIRef(d["page_url"])))
        g.add((dist, DCAT.downloadURL, URIRef(d[f"{suffix}_url"])))
        g.add((dist, DCTERMS["format"], typed(g, FILE_TYPE[file_type], DCTERMS.MediaTypeOrExtent)))
        g.add((dist, DCAT.mediaType, typed(g, MEDIA[media], DCTERMS.MediaType)))
        if d["license_url"]:
            licence = typed(g, URIRef(d["license_url"]), DCTERMS.LicenseDocument)
            g.add((dist, DCTERMS.license, licence))
    return uri


def _paging(g: Graph, cfg: Config, ext: str, page: int, pages: int, total: int) -> None:
    def url(n: int) -> URIRef:
        return URIRef(f"{cfg.hub_url}catalog.{ext}?page={n}")

    node = url(page)
    g.add((node, RDF.type, HYDRA.PagedCollection))
    g.add((node, HYDRA.totalItems, Literal(total, datatype=XSD.integer)))
    g.add((node, HYDRA.itemsPerPage, Literal(cfg.catalog_page_size, datatype=XSD.integer)))
    g.add((node, HYDRA.firstPage, url(1)))
    g.add((node, HYDRA.lastPage, url(pages)))
    if page > 1:
        g.add((node, HYDRA.previousPage, url(page - 1)))
    if page < pages:
        g.add((node, HYDRA.nextPage, url(page + 1)))


def graph(
    cfg: Config,
    datasets: Sequence[dict[str, Any]],
    now: datetime,
    page: int = 1,
    pages: int = 1,
    ext: str = "ttl",
    total: int = 0,
) -> Graph:
    """The catalog with DATASETS (one page of them); paging triples when PAGES > 1."""
    g = Graph()
    g.bind("dcat", DCAT)
    g.bind("dct", DCTERMS)
    g.bind("foaf", FOAF)
    g.bind("hydra", HYDRA)
    catalog = URIRef(f"{cfg.hub_url}catalog")
    g.add((catalog, RDF.type, DCAT.Catalog))
    g.add((catalog, DCTERMS.title, Literal(cfg.title, lang="el")))
    g.add((catalog, DCTERMS.title, Literal("Regional open data catalog", lang="en")))
    g.add((catalog, DCTERMS.description, Literal(cfg.description, lang="el")))
    g.add(
        (
            catalog,
            DCTERMS.publisher,
            agent(g, URIRef(f"{cfg.hub_url}#publisher"), cfg.publisher, cfg.hub_url),
        )
    )
    g.add((catalog, FOAF.homepage, typed(g, URIRef(cfg.hub_url), FOAF.Document)))
    g.add((catalog, DCTERMS.language, typed(g, LANG_EL, DCTERMS.LinguisticSystem)))
    g.add((catalog, DCTERMS.modified, _when(now.strftime("%Y-%m-%dT%H:%M:%S"))))
    publishers: dict[str, URIRef] = {}
    for d in datasets:
        if d["slug"] not in publishers:
            uri = URIRef(f"{d['municipality_url']}#organization")
            publishers[d["slug"]] = agent(g, uri, d["municipality"], d["municipality_url"])
        g.add((catalog, DCAT.dataset, _dataset(g, cfg, d, publishers[d["slug"]])))
    if pages > 1:
        _paging(g, cfg, ext, page, pages, total)
    return g


def serialize(
    cfg: Config, datasets: Sequence[dict[str, Any]], now: datetime
) -> Iterator[tuple[str, bytes]]:
    """(file name, content) of every catalog file: catalog.<ext>, and catalog-page-N.<ext>."""
    size = cfg.catalog_page_size
    pages = max(1, math.ceil(len(datasets) / size))
    for ext, fmt in FORMATS.items():
        for page in range(1, pages + 1):
            chunk = datasets[(page - 1) * size : page * size]
            g = graph(cfg, chunk, now, page, pages, ext, len(datasets))
            data = g.serialize(format=fmt, encoding="utf-8")
            if page == 1:
                yield f"catalog.{ext}", data
            if pages > 1:
                yield f"catalog-page-{page}.{ext}", data

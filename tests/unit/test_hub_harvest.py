"""The hub's harvester (roles/hub/files/.../kallikratis_hub) against portal stand-ins on loopback
that answer the recorded WordPress REST and Datasette answers (tests/unit/data/hub): a first and
an incremental run, edits, deletions and unpublishing between runs, conditional requests, and
every kind of misbehaving portal (500, malformed JSON, timeout, enormous page, down)."""

from __future__ import annotations

import dataclasses
import ipaddress
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hubsupport import closed_port, write_config
from kallikratis_hub import harvest, views

from tests.helpers.loopback import http_server
from tests.helpers.portalstandin import Portal, Region

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # consultation 60 open, 50 closed


@pytest.fixture
def region() -> Iterator[tuple[Region, str]]:
    reg = Region()
    with http_server(reg.handler()) as base:
        yield reg, base


def rows(cfg: harvest.Config, sql: str, *params: object) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(cfg.state_dir / "hub.db")) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


def by_slug(outcomes: list) -> dict:
    return {o.slug: o for o in outcomes}


def test_first_run_then_incremental_run_then_edits(region, tmp_path: Path) -> None:
    reg, base = region
    portal = reg.portals["hersonissos"] = Portal()
    cfg = write_config(tmp_path, base, ["hersonissos"])

    first = harvest.run(cfg, NOW)[0]
    # 3 posts, 2 consultations (the articles are not items), 2 datasets
    assert (first.new, first.changed, first.removed, first.stale) == (7, 0, 0, False)
    items = {(r["kind"], r["wp_id"]): r for r in rows(cfg, "SELECT * FROM item")}
    assert set(items) == {
        ("post", 41),
        ("post", 38),
        ("post", 35),
        ("consultation", 60),
        ("consultation", 50),
    }
    assert items[("post", 35)]["title"] == "Καλώς ήρθατε στη νέα πύλη & στις υπηρεσίες"
    assert items[("post", 41)]["summary"].startswith("Ξεκινούν οι εργασίες στο 1ο Δημοτικό")
    assert items[("consultation", 60)]["deadline"] == "2026-12-20 23:59"
    assert items[("consultation", 60)]["comments"] == 3 + 4 + 1  # the consultation + 2 articles
    assert items[("consultation", 50)]["comments"] == 7  # closed: counted when first seen
    assert (
        items[("post", 41)]["link"]
        == f"{base}/hersonissos/2026/11/28/ergasies-sto-dimotiko-scholeio/"
    )
    datasets = {r["name"]: r for r in rows(cfg, "SELECT * FROM dataset")}
    assert datasets["council_decisions"]["rows"] == 3
    assert datasets["council_decisions"]["title"] == "Αποφάσεις Δημοτικού Συμβουλίου"
    assert datasets["budget_lines"]["csv_url"] == (
        f"{base}/hersonissos/data/opendata/budget_lines.csv?_stream=on&_size=max"
    )
    assert not any("/data/.json" in h for h in portal.hits)  # 403 by design, never asked

    portal.hits.clear()
    second = harvest.run(cfg, NOW)[0]
    assert (second.new, second.changed, second.removed, second.stale) == (0, 0, 0, False)
    assert not [h for h in portal.hits if "modified_after" in h or "include=" in h]

    # an edit, a new post, a deletion, an unpublished consultation, new comments, a new table
    portal.posts[1] = {
        **portal.posts[1],
        "modified_gmt": "2026-11-30T12:00:00",
        "title": {"rendered": "Διακοπή νερού — νέα ώρα"},
    }
    portal.posts.insert(
        0,
        {
            **portal.posts[0],
            "id": 44,
            "date_gmt": "2026-11-30T15:00:00",
            "modified_gmt": "2026-11-30T15:00:00",
            "title": {"rendered": "Νέα ανακοίνωση"},
        },
    )
    del portal.posts[-1]  # post 35 deleted
    portal.consultations = [c for c in portal.consultations if c["id"] != 50]  # unpublished
    portal.comments[61] += 2
    portal.database["tables"].append({**portal.database["tables"][0], "name": "waste_bins"})
    portal.hits.clear()
    third = harvest.run(cfg, NOW)[0]
    assert (third.new, third.changed, third.removed) == (2, 2, 2)  # +44 +bins, 38 + comments
    # the newest known modification (post 41) less one day
    assert any("modified_after=2026-11-27T08%3A00%3A00" in h for h in portal.hits)
    now_items = {(r["kind"], r["wp_id"]): r for r in rows(cfg, "SELECT * FROM item")}
    assert ("post", 35) not in now_items and ("consultation", 50) not in now_items
    assert now_items[("post", 38)]["title"] == "Διακοπή νερού — νέα ώρα"
    assert now_items[("consultation", 60)]["comments"] == 10
    assert not rows(cfg, "SELECT * FROM search WHERE key = 'post:hersonissos:35'")


def test_a_post_deleted_between_listing_and_fetch(region, tmp_path: Path) -> None:
    reg, base = region
    portal = reg.portals["malevizi"] = Portal()
    cfg = write_config(tmp_path, base, ["malevizi"])
    harvest.run(cfg, NOW)
    # post 41 is listed as modified, then deleted before the harvester fetches it
    portal.posts[0] = {**portal.posts[0], "modified_gmt": "2026-11-30T08:00:00"}
    portal.vanish = {41}
    outcome = harvest.run(cfg, NOW)[0]
    assert (outcome.new, outcome.changed, outcome.removed, outcome.stale) == (0, 0, 0, False)
    assert any("include=41" in h for h in portal.hits)  # looked for it by id too
    del portal.posts[0]
    assert harvest.run(cfg, NOW)[0].removed == 1


def test_failures_are_isolated_and_marked_stale(region, tmp_path: Path) -> None:
    reg, base = region
    modes = {
        "good": "ok",
        "broken": "500",
        "garbage": "garbage",
        "slow": "timeout",
        "huge": "huge",
        "unannounced": "huge-unannounced",
    }
    for slug, mode in modes.items():
        reg.portals[slug] = Portal(mode=mode)
    down = f"http://127.0.0.1:{closed_port()}/down/"
    cfg = write_config(tmp_path, base, [*modes, "down"], urls={"down": down})

    started = time.monotonic()
    outcomes = by_slug(harvest.run(cfg, NOW))
    assert time.monotonic() - started < 15
    assert outcomes["good"].stale is False and outcomes["good"].new == 7
    errors = {slug: o.error for slug, o in outcomes.items() if o.stale}
    assert set(errors) == {"broken", "garbage", "slow", "huge", "unannounced", "down"}
    assert "HTTP 500" in errors["broken"]
    assert "malformed JSON" in errors["garbage"]
    assert "timed out" in errors["slow"]
    assert "over the 1000000" in errors["huge"] and "of 8000011 bytes" in errors["huge"]
    assert "over the 1000000 bytes limit" in errors["unannounced"]
    assert "Connection refused" in errors["down"]
    stale = {r["slug"]: r for r in rows(cfg, "SELECT * FROM municipality WHERE stale = 1")}
    assert set(stale) == set(errors) and all(r["last_success"] is None for r in stale.values())


def test_a_portal_that_fails_later_keeps_its_items_marked_stale(region, tmp_path) -> None:
    reg, base = region
    reg.portals["phaistos"] = Portal()
    reg.portals["archanes"] = Portal()
    cfg = write_config(tmp_path, base, ["phaistos", "archanes"])
    harvest.run(cfg, NOW)
    reg.portals["phaistos"].mode = "500"
    reg.portals["archanes"].posts.pop(0)
    outcomes = by_slug(harvest.run(cfg, NOW))
    assert outcomes["phaistos"].stale and outcomes["archanes"].removed == 1
    assert len(rows(cfg, "SELECT * FROM item WHERE slug = 'phaistos'")) == 5
    (m,) = rows(cfg, "SELECT * FROM municipality WHERE slug = 'phaistos'")
    assert m["stale"] == 1 and m["last_success"] == "2026-12-01T10:00:00Z"
    reg.portals["phaistos"].mode = "ok"
    assert by_slug(harvest.run(cfg, NOW))["phaistos"].stale is False


def test_conditional_requests_reuse_the_last_answer(region, tmp_path: Path) -> None:
    reg, base = region
    portal = reg.portals["viannos"] = Portal(etag=True)
    cfg = write_config(tmp_path, base, ["viannos"])
    assert harvest.run(cfg, NOW)[0].new == 7
    assert portal.not_modified == 0
    outcome = harvest.run(cfg, NOW)[0]
    assert portal.not_modified >= 4  # listings, comments and Datasette answered 304
    assert (outcome.new, outcome.changed, outcome.removed, outcome.stale) == (0, 0, 0, False)
    # the cache holds what this run asked, no more: 2 listings, the open consultation's comment
    # count, 2 Datasette answers; the first run's full fetches are gone
    cached = {r["url"] for r in rows(cfg, "SELECT url FROM http_cache")}
    assert len(cached) == 5
    assert not [u for u in cached if "_fields=id%2Cdate_gmt" in u]


def test_a_page_limit_bounds_a_listing(region, tmp_path: Path) -> None:
    reg, base = region
    portal = reg.portals["gortyna"] = Portal()
    template = portal.posts[0]
    portal.posts = [{**template, "id": 100 + i} for i in range(12)]
    limits = {
        "timeout_s": 1.0,
        "budget_s": 10,
        "max_bytes": 1_000_000,
        "per_page": 5,
        "max_pages": 2,
    }
    cfg = write_config(tmp_path, base, ["gortyna"], limits=limits)
    outcome = harvest.run(cfg, NOW)[0]
    assert outcome.stale and "3 pages" in outcome.error


def test_no_personal_data_and_no_foreign_links(region, tmp_path: Path) -> None:
    reg, base = region
    portal = reg.portals["minoa"] = Portal()
    portal.posts[0] = {**portal.posts[0], "link": "javascript:alert(1)"}
    portal.posts[1] = {**portal.posts[1], "link": "https://evil.example/phish"}
    cfg = write_config(tmp_path, base, ["minoa"])
    harvest.run(cfg, NOW)
    dump = "\n".join(sqlite3.connect(cfg.state_dir / "hub.db").iterdump())
    assert "Παπαδοπούλου" not in dump and "author" not in dump
    links = {r["wp_id"]: r["link"] for r in rows(cfg, "SELECT * FROM item WHERE kind='post'")}
    assert links[41] == links[38] == f"{base}/minoa/"
    comment_queries = [h for h in portal.hits if "/wp/v2/comments" in h]
    assert comment_queries and all("_fields=id" in h for h in comment_queries)


@pytest.mark.parametrize("query", ["δημοτικό", "ΔΗΜΟΤΙΚΟ", "δημοτικο", "ΔημοτικΌ", "δημοτ"])
def test_greek_search_ignores_accents_and_case(region, tmp_path: Path, query: str) -> None:
    reg, base = region
    reg.portals["hersonissos"] = Portal()
    cfg = write_config(tmp_path, base, ["hersonissos"])
    harvest.run(cfg, NOW)
    with closing(sqlite3.connect(cfg.state_dir / "public.db")) as conn:
        conn.row_factory = sqlite3.Row
        keys = {r["key"] for r in views.search(conn, query)}
    # post 41: "ΔΗΜΟΤΙΚΟ σχολείο"; the council decisions table: "Δημοτικού Συμβουλίου"
    assert "post:hersonissos:41" in keys
    assert "dataset:hersonissos:council_decisions" in keys
    assert "post:hersonissos:38" not in keys


def test_search_expression_cannot_carry_fts_syntax(region, tmp_path: Path) -> None:
    reg, base = region
    reg.portals["hersonissos"] = Portal()
    cfg = write_config(tmp_path, base, ["hersonissos"])
    harvest.run(cfg, NOW)
    with closing(sqlite3.connect(cfg.state_dir / "public.db")) as conn:
        conn.row_factory = sqlite3.Row
        for hostile in ['"', "title:νερού OR", "NEAR(a b", "*", "' ; DROP TABLE item; --"]:
            views.search(conn, hostile)  # no FTS5 syntax error, no SQL
        # operators and quotes are dropped: only the words are searched
        assert [r["key"] for r in views.search(conn, '"ΝΕΡΟΥ*')] == ["post:hersonissos:38"]
        assert views.search(conn, "title:νερού") == []  # "title" is a word here, not a column
        assert conn.execute("SELECT count(*) FROM item").fetchone()[0] == 5
        assert "http_cache" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_municipalities_leaving_the_configuration_leave_the_hub(region, tmp_path) -> None:
    reg, base = region
    reg.portals["a"] = Portal()
    reg.portals["b"] = Portal()
    cfg = write_config(tmp_path, base, ["a", "b"])
    harvest.run(cfg, NOW)
    assert (cfg.public_dir / "b/feed.atom").exists()
    cfg = write_config(tmp_path, base, ["a"])
    harvest.run(cfg, NOW)
    assert {r["slug"] for r in rows(cfg, "SELECT DISTINCT slug FROM item")} == {"a"}
    assert not (cfg.public_dir / "b").exists()
    assert not rows(cfg, "SELECT * FROM search WHERE slug = 'b'")


def _https_region(tmp: Path, reg: Region) -> tuple[ThreadingHTTPServer, str, Path]:
    """The stand-ins over TLS, with a throw-away self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = tmp / "portal.crt"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "portal.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem, tmp / "portal.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), reg.handler())
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"https://127.0.0.1:{server.server_address[1]}", pem


def test_https_portals_are_checked_against_the_fleet_ca(region, tmp_path: Path) -> None:
    reg, _ = region
    reg.portals["hersonissos"] = Portal()
    server, base, ca = _https_region(tmp_path, reg)
    try:
        cfg = write_config(tmp_path, base, ["hersonissos"])
        untrusted = harvest.run(cfg, NOW)[0]
        assert untrusted.stale and "CERTIFICATE_VERIFY_FAILED" in (untrusted.error or "")
        trusted = dataclasses.replace(cfg, ca_file=str(ca))
        outcome = harvest.run(trusted, NOW)[0]
        assert (outcome.new, outcome.stale) == (7, False)
    finally:
        server.shutdown()
        server.server_close()

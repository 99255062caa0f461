"""roles/hub as Ansible renders it: hub.json read back by the harvester (hostile names intact),
the systemd units through `systemd-analyze verify`, and the nginx site checked by `nginx -t`,
then run on 127.0.0.1 over a real harvest's output with the search application behind it.
The inventory side: a central VM `hub` is told which portals to harvest, and never shares a VM
with control."""

from __future__ import annotations

import http.client
import re
import shutil
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hubsupport import write_config
from kallikratis.checks.helpers_data import applies
from kallikratis.errors import InventoryError
from kallikratis.stackvars import municipality_vars
from kallikratis_hub import harvest, search
from kallikratis_hub.harvest import Config
from role_render import render
from support import SLUGS, InventoryCopy, systemd_verify_units
from test_nginx_config import NGINX, _free_port, _self_signed, nginx_test, running

from tests.helpers.loopback import http_server
from tests.helpers.portalstandin import Portal, Region

DOMAIN = "hub.crete.kallikratis.test"
HOSTILE = 'Δήμος "Χερσονήσου" \\ </script>'
HUB_VARS: dict[str, Any] = {
    "ansible_managed": "Ansible managed (unit test)",
    "kallikratis_fleet": "crete",
    "kallikratis_domain": DOMAIN,
    "kallikratis_tls_cert_file": "/nonexistent/hub.crt",
    "kallikratis_tls_key_file": "/nonexistent/hub.key",
    "kallikratis_tls_ca_file": "/nonexistent/ca.crt",
    "kallikratis_hub_portals": [
        {
            "slug": "hersonissos",
            "display_name": HOSTILE,
            "domain": "hersonissos.crete.kallikratis.test",
            "ip": "192.168.150.10",
            "modules": ["portal", "opendata", "education"],
        },
        {
            "slug": "minoa-pediada",
            "display_name": "Δήμος Μινώα Πεδιάδας",
            "domain": "minoa-pediada.crete.kallikratis.test",
            "ip": "192.168.150.11",
            "modules": ["opendata"],
        },
    ],
}
UNITS = ("kallikratis-hub-harvest.service", "kallikratis-hub-harvest.timer",
         "kallikratis-hub-search.service")  # fmt: skip


def test_config_reaches_the_harvester_intact(tmp_path: Path) -> None:
    text = render("hub", "etc/kallikratis-hub/hub.json.j2", HUB_VARS)
    (tmp_path / "hub.json").write_text(text, encoding="utf-8")
    cfg = Config.load(tmp_path / "hub.json")
    assert [p.name for p in cfg.portals] == [HOSTILE, "Δήμος Μινώα Πεδιάδας"]
    assert cfg.portals[0].url == "https://hersonissos.crete.kallikratis.test/"
    assert cfg.portals[1].modules == ("opendata",)
    assert cfg.hub_url == f"https://{DOMAIN}/"
    assert cfg.ca_file == "/etc/kallikratis-hub/fleet-ca.crt"
    assert cfg.limits.timeout_s == 10 and cfg.limits.budget_s == 60 and cfg.workers == 8
    assert cfg.publisher == "Περιφερειακό κέντρο δεδομένων (crete)"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze(tmp_path: Path) -> None:
    files = {u: render("hub", f"etc/systemd/system/{u}.j2", HUB_VARS) for u in UNITS}
    for unit in files.values():
        unit_user = re.search(r"^User=(.*)$", unit, re.M)
        assert unit_user is None or unit_user.group(1) == "kallikratis-hub"
    # the host has no kallikratis-hub user: verify as root, the rest unchanged
    files = {n: t.replace("User=kallikratis-hub", "User=root").replace(
        "Group=kallikratis-hub", "Group=root") for n, t in files.items()}  # fmt: skip
    proc = systemd_verify_units(tmp_path / "units", files)
    assert proc.returncode == 0, proc.stderr
    assert "ReadWritePaths=/var/lib/kallikratis-hub /var/www/kallikratis-hub" in files[UNITS[0]]
    assert "IPAddressDeny=any" in files[UNITS[2]]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[int, Config]]:
    """A harvest of two stand-ins, its output behind the rendered nginx site, search running."""
    reg = Region()
    with http_server(reg.handler()) as base:
        reg.portals["hersonissos"] = Portal()
        reg.portals["malevizi"] = Portal()
        cfg = write_config(tmp_path, base, ["hersonissos", "malevizi"], catalog_page_size=3)
        harvest.run(cfg, datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    search_port, https = _free_port(), _free_port()
    app = search.SearchApp(cfg.state_dir / "public.db", {"title": cfg.title, "hub_url": ""})
    server = search.make_server("127.0.0.1", search_port, app, server_class=search._Server,
                                handler_class=search._QuietHandler)  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _self_signed(tmp_path / "tls")
    text = render(
        "hub",
        "etc/nginx/conf.d/kallikratis-hub.conf.j2",
        HUB_VARS,
        hub_tls_dir=str(tmp_path / "tls"),
        hub_public_dir=str(cfg.public_dir),
        hub_search_listen=f"127.0.0.1:{search_port}",
        hub_search_rate="2r/s",
    )
    text = text.replace("/var/log/nginx/access.log", str(tmp_path / "access.log"))
    text = text.replace("listen 80 ", f"listen 127.0.0.1:{_free_port()} ")
    text = text.replace("listen 443 ", f"listen 127.0.0.1:{https} ")
    text = re.sub(r"\n *listen \[::\]:\d+ .*;", "", text)
    text = text.replace("http2 on;", "")  # the host's nginx 1.22 predates it (the VMs: 1.26)
    (tmp_path / "site.conf").write_text(text, encoding="utf-8")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n"
        f"    include /etc/nginx/mime.types;\n    access_log off;\n"
        f"    client_body_temp_path {tmp_path}/body;\n    proxy_temp_path {tmp_path}/proxy;\n"
        f"    include {tmp_path}/site.conf;\n}}\n"
    )
    check = nginx_test(conf)
    assert check.returncode == 0, check.stderr
    try:
        with running(conf, https):
            yield https, cfg
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's own throwaway certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": DOMAIN})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


@pytest.mark.skipif(not Path(NGINX).is_file(), reason="nginx is not installed")
def test_site_serves_pages_feeds_catalog_pages_and_search(site, tmp_path: Path) -> None:
    https, cfg = site
    status, headers, body = get(https, "/")
    assert status == 200 and "Εργασίες συντήρησης" in body.decode()
    assert "strict-transport-security" in headers
    status, headers, _ = get(https, "/feed.atom")
    assert status == 200 and headers["content-type"].startswith("application/atom+xml")
    status, headers, first = get(https, "/catalog.ttl")
    assert status == 200 and headers["content-type"].startswith("text/turtle")
    assert first == (cfg.public_dir / "catalog-page-1.ttl").read_bytes()
    status, _, second = get(https, "/catalog.ttl?page=2")
    assert status == 200 and second == (cfg.public_dir / "catalog-page-2.ttl").read_bytes()
    status, headers, _ = get(https, "/catalog.jsonld?page=2")
    assert status == 200 and headers["content-type"].startswith("application/ld+json")
    assert get(https, "/catalog.rdf")[1]["content-type"].startswith("application/rdf+xml")
    assert get(https, "/catalog.ttl?page=3")[0] == 404
    assert get(https, "/catalog.ttl?page=../hub.json")[2] == first  # not a page: page 1
    status, headers, body = get(https, "/search?q=%CE%B4%CE%B7%CE%BC%CE%BF%CF%84%CE%B9%CE%BA%CF%8C")
    assert status == 200 and "ΔΗΜΟΤΙΚΟ" in body.decode()
    assert "content-security-policy" in headers
    assert get(https, "/.hidden")[0] == 403
    statuses = [get(https, "/search?q=x")[0] for _ in range(40)]
    assert 429 in statuses  # past the burst, per client
    log = (tmp_path / "access.log").read_text()
    assert "/search" in log and "q=" not in log  # the searches themselves are not logged


def test_the_hub_is_told_which_portals_to_harvest(inv: InventoryCopy, state_dir: Any) -> None:
    inv.add_central()
    inv.add_central("hub", central_roles=["hub"])
    fleet = inv.load()
    hub = fleet.get("hub")
    assert hub.is_central and hub.central_roles == ("hub",)
    values = municipality_vars(fleet, hub, state_dir)
    portals = values["kallikratis_hub_portals"]
    assert [p["slug"] for p in portals] == list(SLUGS)
    assert {"slug", "display_name", "domain", "ip", "modules"} == set(portals[0])
    assert "kallikratis_monitoring_targets" not in values
    assert "kallikratis_hub_portals" not in municipality_vars(
        fleet, fleet.get("control"), state_dir
    )


def test_verify_runs_the_hub_suite_on_the_hub_only() -> None:
    hub, control, tenant = {"central_roles": ["hub"]}, {"central_roles": ["control"]}, {}
    assert applies("test_hub.py", hub)
    assert not applies("test_hub.py", control) and not applies("test_hub.py", tenant)
    assert not applies("test_portal.py", hub) and applies("test_base.py", hub)


def test_the_hub_never_shares_control_s_vm(inv: InventoryCopy) -> None:
    inv.add_central(central_roles=["control", "hub"])
    with pytest.raises(InventoryError) as err:
        inv.load()
    problems = [str(p) for p in err.value.problems]
    assert any("control" in p and "central_roles" in p and "never share" in p for p in problems)

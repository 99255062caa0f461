"""Public endpoints on the real shared fleet (``fresh``: reverted before and after the module):
rate limits on the log-ins and on Datasette's SQL, Datasette's query limits, the admin
allow-list, and `tls: acme` against Debian's pebble ACME server inside the lab namespace;
the same deploy gives hersonissos a hostile-but-valid display name (quotes, &, <, %, $, \\,
Greek), checked in every systemd unit and public page that shows it.
"""

from __future__ import annotations

import html
import http.client
import json
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import GATEWAY, Deployed, Fleet
from tests.helpers.hostile import HOSTILE_DISPLAY_NAME
from tests.helpers.pebble import Pebble

SLUG = "hersonissos"  # every module on


class _To(http.client.HTTPSConnection):
    """HTTPS to a VM's address with the municipality's domain as SNI and Host (no DNS)."""

    def __init__(self, ip: str, domain: str, ctx: ssl.SSLContext) -> None:
        super().__init__(domain, 443, context=ctx, timeout=60)
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, 443), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class Site:
    fleet: Fleet
    ip: str
    domain: str


def _request(
    site: Site, method: str, path: str, body: str | None = None, cafile: Path | None = None
) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(cafile or site.fleet.ca_file))
    conn = _To(site.ip, site.domain, ctx)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(fresh: Deployed) -> Site:
    ip, domain = fresh.fleet.sites()[SLUG]
    return Site(fresh.fleet, ip, domain)


def test_a_login_flood_is_answered_429(site: Site) -> None:
    # the zone: 6 log-ins a minute (one more every 10 s) after a burst of 5 per client address
    body = "log=nobody&pwd=wrong&wp-submit=Log+In"
    started = time.monotonic()
    codes = [_request(site, "POST", "/wp-login.php", body)[0] for _ in range(15)]
    served = len(codes) - codes.count(429)
    assert 429 in codes and codes[:6].count(429) == 0, codes  # a citizen's first tries pass
    assert served <= 6 + (time.monotonic() - started) // 10 + 1, codes
    kolibri = [
        _request(site, "POST", "/learn/api/auth/session/", '{"username":"x"}')[0] for _ in range(8)
    ]
    assert kolibri.count(429) >= 6, kolibri  # the same client's bucket is empty by now


def test_datasette_cuts_a_runaway_query_and_limits_sql_floods(site: Site) -> None:
    status, body = _request(site, "GET", "/data/-/settings.json")
    assert status == 200, body[:300]
    settings = json.loads(body)
    assert (settings["sql_time_limit_ms"], settings["max_returned_rows"]) == (1000, 1000)
    assert settings["num_sql_threads"] == 2
    forever = "with recursive c(x) as (select 1 union all select x + 1 from c) select max(x) from c"
    started = time.monotonic()
    status, body = _request(
        site, "GET", "/data/opendata.json?" + urllib.parse.urlencode({"sql": forever})
    )
    took = time.monotonic() - started
    assert status == 400 and b"too long" in body, (status, body[:300])
    assert took < 10, f"the runaway query ran {took:.1f} s"
    codes = [_request(site, "GET", "/data/opendata.json?sql=select+1")[0] for _ in range(15)]
    assert 429 in codes and codes[0] == 200, codes


@pytest.fixture(scope="module")
def acme(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """hersonissos switched to `tls: acme` with pebble as the ACME server, the admin paths
    allowed to a network the controller is not in, and a hostile display name; deployed once
    (and once more, which must change nothing) for the tests below. Those are `extended`
    (README: Tests): two deploys and a verify of one VM, about 5-6 min under TCG."""
    fleet, ip = site.fleet, site.ip
    work = tmp_path_factory.mktemp("acme")
    # pebble resolves every name to hersonissos through pebble-challtestsrv's mock DNS
    dns = subprocess.Popen(
        [
            "pebble-challtestsrv",
            f"-defaultIPv4={ip}",
            "-defaultIPv6=",
            f"-dns01={GATEWAY}:8053",
            "-http01=",
            "-https01=",
            "-tlsalpn01=",
            f"-management={GATEWAY}:8055",
        ],
        stdout=(work / "challtestsrv.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pebble = Pebble(work / "pebble", GATEWAY, dns_server=f"{GATEWAY}:8053")
    (work / "pebble").mkdir()
    try:
        with pebble.running():
            (fleet.inventory / "acme-ca.pem").write_bytes(pebble.tls_ca_file.read_bytes())
            (fleet.inventory / "acme-roots.pem").write_bytes(pebble.issuing_roots())
            fleet.set_fleet_vars(
                acme_directory=pebble.directory_url,
                acme_email="ops@e2e.example.org",
                acme_ca_bundle="acme-ca.pem",
                acme_roots="acme-roots.pem",
                admin_allow=["192.0.2.0/24"],
            )
            fleet.set_host(SLUG, tls="acme", display_name=HOSTILE_DISPLAY_NAME)
            first = fleet.kk_json("deploy", SLUG, timeout=1200)
            second = fleet.kk_json("deploy", SLUG, timeout=1200)
            verify = fleet.kk_json("verify", SLUG, check=False)
            yield {"first": first, "second": second, "verify": verify, "work": work}
    finally:
        dns.terminate()
        dns.wait(10)


@pytest.mark.extended
def test_acme_deploy_gets_a_certificate_and_verify_passes(acme: dict) -> None:
    host = acme["first"]["hosts"][SLUG]
    assert host["failed"] == 0 and host["unreachable"] == 0, acme["first"]
    failed = [c for c in acme["verify"]["checks"] if not c["passed"]]
    assert not failed, failed
    names = {c["name"] for c in acme["verify"]["checks"]}
    assert "test_acme_certificate_is_served_and_renewed" in names


@pytest.mark.extended
def test_a_second_acme_deploy_changes_nothing(site: Site, acme: dict) -> None:
    assert acme["second"]["hosts"][SLUG]["changed"] == 0, acme["second"]
    certs = site.fleet.ssh(SLUG, f"sudo ls /etc/letsencrypt/archive/{site.domain}/").split()
    assert sorted(c for c in certs if c.startswith("cert")) == ["cert1.pem"]
    assert site.fleet.ssh(SLUG, "systemctl is-enabled certbot.timer").strip() == "enabled"


@pytest.mark.extended
def test_the_served_certificate_is_the_acme_one(site: Site, acme: dict) -> None:
    roots = site.fleet.inventory / "acme-roots.pem"
    status, _ = _request(site, "GET", "/", cafile=roots)  # chains to pebble's root
    assert status == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        _request(site, "GET", "/")  # and not to the fleet CA


@pytest.mark.extended
def test_admin_paths_outside_admin_allow_get_403(site: Site, acme: dict) -> None:
    roots = site.fleet.inventory / "acme-roots.pem"
    for path in ("/wp-admin/", "/wp-login.php"):
        assert _request(site, "GET", path, cafile=roots)[0] == 403, path
    for path in ("/", "/data/", "/learn/"):
        assert _request(site, "GET", path, cafile=roots)[0] in (200, 301, 302), path


@pytest.mark.extended
@pytest.mark.parametrize(
    ("unit", "prefix"),
    [
        ("datasette.service", "Datasette: open data of "),
        ("kolibri.service", "Kolibri: e-learning of "),
    ],
)
def test_the_hostile_name_stays_one_value_in_the_systemd_units(
    site: Site, acme: dict, unit: str, prefix: str
) -> None:
    fleet = site.fleet
    shown = fleet.ssh(SLUG, f"systemctl show -p Description --value {unit}").rstrip("\n")
    assert shown == prefix + HOSTILE_DISPLAY_NAME
    path = f"/etc/systemd/system/{unit}"
    fleet.ssh(SLUG, f"sudo systemd-analyze verify {path}")  # raises on a non-zero exit
    text = fleet.ssh(SLUG, f"cat {path}")
    assert sum(line.startswith("Description=") for line in text.splitlines()) == 1
    assert "[Service]" in text and text.count("[Service]") == 1, text
    assert fleet.ssh(SLUG, f"systemctl is-active {unit}").strip() == "active"


@pytest.mark.extended
def test_the_hostile_name_is_shown_literally_on_the_public_pages(site: Site, acme: dict) -> None:
    roots = site.fleet.inventory / "acme-roots.pem"
    status, body = _request(site, "GET", "/?rest_route=/", cafile=roots)
    assert status == 200, body[:300]
    assert html.unescape(json.loads(body)["name"]) == HOSTILE_DISPLAY_NAME
    status, body = _request(site, "GET", "/data/-/metadata.json", cafile=roots)
    assert status == 200, body[:300]
    metadata = json.loads(body)
    assert metadata["source"] == HOSTILE_DISPLAY_NAME
    assert metadata["title"] == f"Ανοικτά δεδομένα — {HOSTILE_DISPLAY_NAME}"

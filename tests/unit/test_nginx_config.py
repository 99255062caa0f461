"""The roles' nginx templates, rendered and checked by the real nginx (`nginx -t`), and run on
127.0.0.1 to see the limits act: log-in POSTs and arbitrary SQL beyond the burst get 429, the
admin paths answer only the allow-list. nginx's service is never started: the test runs the
binary itself on a private prefix, loopback only, and stops it.

The templates name absolute VM paths (/etc/nginx/snippets/..., ports 80 and 443); the test
points them into its temporary directory and at free loopback ports, and replaces the
upstreams (PHP-FPM, Datasette, Kolibri) by a tiny nginx server answering 200. The host's
nginx may be older than the VMs' (Debian 12: 1.22; the image: Debian 13, 1.26): `http2 on;`
(1.25.1+) is then rewritten to the older `listen ... http2`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: the request went through to the application (the PHP paths have no PHP-FPM here: 502)
PASSED = (200, 502)
ROLES = Path(__file__).resolve().parents[2] / "roles"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DOMAIN = "hersonissos.crete.kallikratis.test"
TEMPLATES = {
    "web": [
        "etc/nginx/conf.d/kallikratis.conf.j2",
        "etc/nginx/kallikratis-maintenance-bypass.conf.j2",
        "etc/nginx/snippets/kallikratis-headers.conf.j2",
        "etc/nginx/snippets/kallikratis-admin-allow.conf.j2",
        "etc/nginx/snippets/kallikratis-limit-login.conf.j2",
        "etc/nginx/snippets/kallikratis-limit-sql.conf.j2",
    ],
    "portal": [
        "etc/nginx/kallikratis.d/portal.conf.j2",
        "etc/nginx/conf.d/kallikratis-portal-cache.conf.j2",
    ],
    "opendata": [
        "etc/nginx/kallikratis.d/opendata.conf.j2",
        "etc/nginx/snippets/kallikratis-datasette-a11y.conf.j2",
    ],
    "education": ["etc/nginx/kallikratis.d/education.conf.j2"],
}

pytestmark = pytest.mark.skipif(
    not Path(NGINX).is_file(), reason="nginx is not installed (scripts/system-packages.txt)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nginx_version() -> tuple[int, ...]:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(x) for x in match.groups())


def _self_signed(tls: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def role_vars(root: Path, upstream: int, **overrides: Any) -> dict[str, Any]:
    """The values the roles' defaults resolve to on a VM, paths moved under *root*."""
    values: dict[str, Any] = {
        "ansible_managed": "Ansible managed (unit test)",
        "web_domain": DOMAIN,
        "web_tls_dir": str(root / "tls"),
        "web_snippet_dir": str(root / "kallikratis.d"),
        "web_maintenance_bypass_conf": str(root / "bypass.conf"),
        "web_maintenance_bypass_token": "0123456789abcdef0123",
        "web_maintenance_flag": str(root / "maintenance"),
        "web_maintenance_root": str(root / "maintenance-root"),
        "web_static_home": False,
        "web_static_root": str(root / "static"),
        "web_client_max_body_size": "64m",
        "web_hsts_max_age": 31536000,
        "web_admin_allow": ["0.0.0.0/0", "::/0"],
        "web_limit_zone_size": "1m",
        "web_limit_login_rate": "6r/m",
        "web_limit_login_burst": 5,
        "web_limit_sql_rate": "1r/s",
        "web_limit_sql_burst": 10,
        "web_tls_mode": "fleet-ca",
        "web_acme_webroot": str(root / "acme"),
        "portal_domain": DOMAIN,
        "portal_wp_root": str(root / "wordpress"),
        "portal_wp_content": str(root / "wp-content"),
        "portal_php_fpm_socket": str(root / "php.sock"),
        "portal_page_cache": True,
        "portal_page_cache_dir": str(root / "page-cache"),
        "portal_page_cache_valid": "10m",
        "portal_page_cache_max_size": "16m",
        "portal_static_expires": "30d",
        "opendata_url_path": "/data/",
        "opendata_listen_address": "127.0.0.1",
        "opendata_port": upstream,
        "opendata_sql_time_limit_ms": 1000,
        "opendata_a11y_snippet": "/etc/nginx/snippets/kallikratis-datasette-a11y.conf",
        "opendata_language": "el",
        "opendata_field_labels": yaml.safe_load(
            (ROLES / "opendata" / "defaults" / "main.yml").read_text()
        )["opendata_field_labels"],
        "education_url_path": "/learn/",
        "education_listen_address": "127.0.0.1",
        "education_port": upstream,
    }
    values.update(overrides)
    return values


def render_tree(root: Path, values: dict[str, Any], https: int, http_port: int) -> Path:
    """Render every nginx template of the roles into *root*; returns the main nginx.conf."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)  # noqa: S701
    env.filters["bool"] = bool  # Ansible's filter, on the booleans given here
    env.filters["to_json"] = json.dumps  # Ansible's (ASCII output, as json.dumps)
    snippets = root / "snippets"
    for sub in ("kallikratis.d", "snippets", "conf.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for role, names in TEMPLATES.items():
        for name in names:
            text = env.from_string((ROLES / role / "templates" / name).read_text()).render(values)
            text = text.replace("/etc/nginx/snippets/kallikratis-", f"{snippets}/kallikratis-")
            text = text.replace("listen 80 ", f"listen 127.0.0.1:{http_port} ")
            text = text.replace("listen 443 ", f"listen 127.0.0.1:{https} ")
            text = re.sub(r"\n *listen \[::\]:\d+ .*;", "", text)
            if _nginx_version() < (1, 25, 1):
                text = text.replace("http2 on;", "")
            base = Path(name.removesuffix(".j2")).name
            dest = {
                "kallikratis.conf": root / "kallikratis.conf",
                "kallikratis-maintenance-bypass.conf": root / "bypass.conf",
            }.get(base, root / Path(name).parent.name / base)
            dest.write_text(text)
    # Debian's snippets/fastcgi-php.conf, reduced to what nginx -t needs
    (snippets / "fastcgi-php.conf").write_text(
        "fastcgi_split_path_info ^(.+?\\.php)(/.*)$;\ninclude fastcgi.conf;\n"
    )
    (root / "fastcgi.conf").write_text("fastcgi_param SCRIPT_FILENAME $request_filename;\n")
    _self_signed(root / "tls")
    conf = root / "nginx.conf"
    conf.write_text(
        f"pid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\nhttp {{\n"
        f"    access_log off;\n    client_body_temp_path {root}/body;\n"
        f"    proxy_temp_path {root}/proxy;\n    fastcgi_temp_path {root}/fastcgi;\n"
        f"    include {root}/conf.d/*.conf;\n"
        f"    include {root}/kallikratis.conf;\n"
        # the stand-in upstream of Datasette and Kolibri answers 200; there is no PHP-FPM, so
        # a request that reaches PHP gets 502 (PASSED: neither 403 nor 429)
        f"    server {{ listen 127.0.0.1:{values['opendata_port']}; return 200 'upstream'; }}\n"
        "}\n"
    )
    return conf


def nginx_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextlib.contextmanager
def running(conf: Path, https: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [NGINX, "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off; master_process off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", https), 1).close()
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def request(https: int, method: str, path: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's own throwaway certificate
    conn = http.client.HTTPSConnection("127.0.0.1", https, context=ctx, timeout=10)
    try:
        conn.request(
            method,
            path,
            body=b"log=x&pwd=y" if method == "POST" else None,
            headers={"Host": DOMAIN},
        )
        res = conn.getresponse()
        res.read()
        return res.status
    finally:
        conn.close()


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, Any], int, int]:
    https, http_port, upstream = _free_port(), _free_port(), _free_port()
    return tmp_path / "nginx", role_vars(tmp_path / "nginx", upstream), https, http_port


@pytest.mark.parametrize("mode", ["fleet-ca", "acme"])
def test_rendered_configuration_passes_nginx_t(tree: Any, mode: str) -> None:
    root, values, https, http_port = tree
    values["web_tls_mode"] = mode
    conf = render_tree(root, values, https, http_port)
    res = nginx_test(conf)
    assert res.returncode == 0, res.stderr
    main = (root / "kallikratis.conf").read_text()
    assert main.count("limit_req_zone") == 2, "zones are defined once, in the http context"
    assert ("acme-challenge" in main) is (mode == "acme")


def test_a_broken_snippet_fails_nginx_t(tree: Any) -> None:
    """The check has teeth: an undefined zone is refused."""
    root, values, https, http_port = tree
    conf = render_tree(root, values, https, http_port)
    limit = root / "snippets" / "kallikratis-limit-sql.conf"
    limit.write_text(limit.read_text().replace("zone=kallikratis_sql", "zone=nowhere"))
    assert nginx_test(conf).returncode != 0


def test_login_posts_and_sql_beyond_the_burst_get_429(tree: Any) -> None:
    root, values, https, http_port = tree
    conf = render_tree(root, values, https, http_port)
    with running(conf, https):
        logins = [request(https, "POST", "/wp-login.php") for _ in range(11)]
        assert set(logins[:6]) <= set(PASSED) and set(logins[6:]) == {429}, logins
        assert request(https, "GET", "/wp-login.php") in PASSED, "GET of the form: not limited"
        kolibri = [request(https, "POST", "/learn/api/auth/session/") for _ in range(3)]
        assert kolibri == [429] * 3, "one log-in zone per client for WordPress and Kolibri"
        assert request(https, "GET", "/learn/api/auth/session/current/") == 200
        sql = [request(https, "GET", "/data/opendata?sql=select+1") for _ in range(14)]
        assert sql[:11] == [200] * 11 and 429 in sql[11:], sql
        assert request(https, "GET", "/data/opendata/council_decisions") == 200, "browsing"
        assert request(https, "GET", "/data/opendata/x?_where=1") == 429
        assert request(https, "POST", "/xmlrpc.php") == 429


def test_admin_paths_answer_only_the_allow_list(tree: Any) -> None:
    root, values, https, http_port = tree
    values["web_admin_allow"] = ["192.0.2.0/24"]  # not 127.0.0.1
    conf = render_tree(root, values, https, http_port)
    with running(conf, https):
        for path in (
            "/wp-admin/",
            "/wp-admin/options.php",
            "/wp-login.php",
            "/learn/el/device/",
            "/learn/facility/",
            "/learn/en/device",
        ):
            assert request(https, "GET", path) == 403, path
        assert request(https, "GET", "/wp-admin") == 301  # to /wp-admin/, refused there
        for path in ("/", "/wp-admin/admin-ajax.php", "/learn/", "/learn/el/learn/", "/data/"):
            assert request(https, "GET", path) in PASSED, path
    values["web_admin_allow"] = ["127.0.0.0/8"]
    conf = render_tree(root, values, https, http_port)
    with running(conf, https):
        assert request(https, "GET", "/wp-admin/options.php") in PASSED
        assert request(https, "GET", "/learn/el/device/") == 200

"""The control VM's dashboard (roles/monitoring): its nginx site rendered by Ansible, its
basic-auth file made by the role's own expression (password_hash of the vaulted password),
checked by `nginx -t` and then run on 127.0.0.1: no password 401, a wrong one 401, the right
one 200, and an address outside the admin allow-list 403."""

from __future__ import annotations

import base64
import http.client
import re
import socket
import ssl
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from role_render import CONTROL_VARS, ROLES, render, role_defaults
from test_nginx_config import NGINX, nginx_test, running

PASSWORD = "Dashboard-Pa55word with spaces"
DOMAIN = CONTROL_VARS["kallikratis_domain"]

pytestmark = pytest.mark.skipif(not Path(NGINX).is_file(), reason="nginx is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _htpasswd() -> str:
    """The role's task, rendered as Ansible would: its content with its vars."""
    tasks = yaml.safe_load((ROLES / "monitoring/tasks/dashboard.yml").read_text())
    task = next(t for t in tasks if "password file" in t["name"])
    values = role_defaults("monitoring") | CONTROL_VARS
    values["vault_monitoring_report_password"] = PASSWORD  # as Ansible loads control's vault
    for name, value in task["vars"].items():
        values[name] = trust_as_template(value)
    with warnings.catch_warnings():  # "already configured" after the first test
        warnings.simplefilter("ignore")
        init_plugin_loader()  # what ansible-playbook does first: lookups resolve by FQCN
    templar = Templar(loader=DataLoader(), variables=values)
    content = task["ansible.builtin.copy"]["content"]
    return str(templar.template(trust_as_template(content), escape_backslashes=False))


def _site(tmp_path: Path, https: int, allow: list[str]) -> Path:
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<p>fleet report</p>\n")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + [
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={DOMAIN}",
            "-keyout",
            str(tmp_path / "server.key"),
        ]
        + ["-out", str(tmp_path / "server.crt")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    text = render(
        "monitoring",
        "etc/nginx/conf.d/kallikratis-control.conf.j2",
        CONTROL_VARS | {"kallikratis_admin_allow": allow},
        monitoring_tls_dir=str(tmp_path),
        monitoring_report_root=str(tmp_path / "report"),
    )
    text = text.replace("/etc/nginx/kallikratis-report.htpasswd", str(tmp_path / "htpasswd"))
    text = text.replace("listen 80 ", f"listen 127.0.0.1:{_free_port()} ")
    text = text.replace("listen 443 ", f"listen 127.0.0.1:{https} ")
    text = re.sub(r"\n *listen \[::\]:\d+ .*;", "", text)
    text = text.replace("http2 on;", "")  # the host's nginx 1.22 predates it (the VMs: 1.26)
    (tmp_path / "site.conf").write_text(text)
    (tmp_path / "htpasswd").write_text(_htpasswd())
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n"
        f"    access_log off;\n    client_body_temp_path {tmp_path}/body;\n"
        f"    include {tmp_path}/site.conf;\n}}\n"
    )
    return conf


def _get(port: int, password: str | None) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"Host": DOMAIN}
    if password is not None:
        token = base64.b64encode(f"kallikratis:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request("GET", "/", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_password_file_is_stable_and_hashed(tmp_path: Path) -> None:
    first = _htpasswd()
    assert first == _htpasswd(), "a second run would report a change"
    # $6$ without rounds=: passlib leaves out glibc's default of 5000
    assert re.fullmatch(r"kallikratis:\$6\$[0-9a-f]{16}\$[./0-9A-Za-z]{86}\n", first), first
    assert PASSWORD not in first


def test_dashboard_asks_for_the_password(tmp_path: Path) -> None:
    https = _free_port()
    conf = _site(tmp_path, https, ["127.0.0.1/32"])
    check = nginx_test(conf)
    assert check.returncode == 0, check.stderr
    with running(conf, https):
        assert _get(https, None) == 401
        assert _get(https, "wrong") == 401
        assert _get(https, PASSWORD) == 200


def test_dashboard_refuses_addresses_outside_the_allow_list(tmp_path: Path) -> None:
    https = _free_port()
    conf = _site(tmp_path, https, ["192.0.2.0/24"])
    with running(conf, https):
        assert _get(https, PASSWORD) == 403

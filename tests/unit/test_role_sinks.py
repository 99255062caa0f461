"""Inventory text in the roles' templates is escaped for each sink, with Ansible's own
templating: systemd units (checked by systemd's own parser), HTML, JSON, PHP strings.

HOSTILE_DISPLAY_NAME (tests/helpers/hostile.py) is valid inventory text: the end-to-end test
deploys it and checks the same sinks on a real VM.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from kallikratis import model, paths
from kallikratis.documents import VmKeys, compose
from role_render import trusted
from support import InventoryCopy, fixed_client_public_key, fixed_host_key

from tests.helpers.hostile import HOSTILE_DISPLAY_NAME

ROLES = paths.PROJECT_ROOT / "roles"
#: a specifier systemd would expand (%n: the unit name) and a trailing backslash (a line
#: continuation that would swallow the next line of the unit)
SYSTEMD_NAMES = [HOSTILE_DISPLAY_NAME, "Δήμος 100%n και %% τέλος", "Δήμος \\"]


def _render(role: str, template: str, name: str, **extra: Any) -> str:
    loader = DataLoader()
    variables = trusted(loader.load_from_file(str(ROLES / role / "defaults" / "main.yml")))
    variables.update(
        ansible_managed="Ansible managed",
        kallikratis_display_name=name,  # untrusted, as the vars plugin hands it
        kallikratis_domain="hersonissos.crete.kallikratis.test",
        kallikratis_modules=["portal", "opendata", "education"],
        kallikratis_language="el",
        kallikratis_branding={"colour": "#1f4e79", "logo": ""},
        kallikratis_datasets=["budget_lines"],
        kallikratis_data_dir="/srv/data",
        kallikratis_wheelhouse="/opt/kallikratis/wheels",
        kallikratis_nginx_snippet_dir="/etc/nginx/kallikratis.d",
        kallikratis_maintenance_flag="/etc/kallikratis/maintenance",
    )
    variables.update(extra)
    text = (ROLES / role / "templates" / template).read_text(encoding="utf-8")
    return str(
        Templar(loader=loader, variables=variables).template(
            trust_as_template(text), escape_backslashes=False
        )
    )


def _systemd_description(unit: Path) -> str:
    """The Description systemd itself parses from *unit* (its debug dump of the unit)."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        env={"SYSTEMD_LOG_LEVEL": "debug", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.findall(r"^\s+Description: (.*)$", proc.stdout + proc.stderr, re.M)
    assert found, proc.stdout + proc.stderr
    return found[0]


@pytest.mark.parametrize("name", SYSTEMD_NAMES, ids=["hostile", "specifier", "backslash"])
@pytest.mark.parametrize(
    ("role", "template", "prefix"),
    [
        ("opendata", "etc/systemd/system/datasette.service.j2", "Datasette: open data of "),
        ("education", "etc/systemd/system/kolibri.service.j2", "Kolibri: e-learning of "),
    ],
    ids=["datasette", "kolibri"],
)
def test_systemd_units_keep_the_name_in_description(
    tmp_path: Path, role: str, template: str, prefix: str, name: str
) -> None:
    text = _render(role, template, name)
    unit = tmp_path / Path(template).name.removesuffix(".j2")
    unit.write_text(text, encoding="utf-8")
    got = _systemd_description(unit)
    # a trailing backslash is doubled (systemd has no other way to end a value with one)
    assert got == prefix + (name + "\\" if name.endswith("\\") else name)
    assert "After=network.target" in text.splitlines()


@pytest.mark.parametrize(
    "template",
    ["var/www/kallikratis/index.html.j2", "usr/share/kallikratis/web/maintenance.html.j2"],
)
def test_web_pages_show_the_literal_name(template: str) -> None:
    text = _render("web", template, HOSTILE_DISPLAY_NAME)
    assert "<Σ>" not in text and '"Ηρακλείου"' not in text
    title = re.search(r"<title>(.*)</title>", text)
    assert title and html.unescape(title[1]).endswith(HOSTILE_DISPLAY_NAME)
    h1 = re.search(r"<h1>(.*)</h1>", text)
    assert h1 and html.unescape(h1[1]) == HOSTILE_DISPLAY_NAME


def test_datasette_metadata_is_json_with_the_literal_name() -> None:
    text = _render("opendata", "var/lib/opendata/metadata.json.j2", HOSTILE_DISPLAY_NAME)
    data = json.loads(text)
    assert data["source"] == HOSTILE_DISPLAY_NAME
    assert data["title"] == f"Ανοικτά δεδομένα — {HOSTILE_DISPLAY_NAME}"


def test_portal_content_is_html_escaped() -> None:
    loader = DataLoader()
    variables = trusted(loader.load_from_file(str(ROLES / "portal" / "defaults" / "main.yml")))
    variables.update(kallikratis_display_name=HOSTILE_DISPLAY_NAME)
    templar = Templar(loader=loader, variables=variables)
    post = templar.template(variables["portal_first_post"])
    assert "<Σ>" not in post["content"]
    assert HOSTILE_DISPLAY_NAME in html.unescape(post["content"])
    assert templar.template(variables["portal_site_title"]) == HOSTILE_DISPLAY_NAME


def _php_single_quoted(source: str) -> list[str]:
    """The values of PHP single-quoted string literals in *source*, parsed as PHP does:
    ``\\\\`` is a backslash, ``\\'`` a quote, any other backslash is literal."""
    out, i = [], 0
    while (i := source.find("'", i)) >= 0:
        i += 1
        value = []
        while source[i] != "'":
            if source[i] == "\\" and source[i + 1] in "\\'":
                i += 1
            value.append(source[i])
            i += 1
        out.append("".join(value))
        i += 1
    return out


def test_php_strings_round_trip() -> None:
    password = "p'a\\ss' . system('id') . '\\"
    domain = "x.test'); system('id'); //\\"
    text = _render(
        "portal",
        "etc/wordpress/config-domain.php.j2",
        HOSTILE_DISPLAY_NAME,
        vault_portal_db_password=password,
        kallikratis_domain=domain,
    )
    code = "\n".join(line for line in text.splitlines() if not line.startswith("//"))
    strings = _php_single_quoted(code)
    assert strings[strings.index("DB_PASSWORD") + 1] == password
    assert strings[strings.index("WP_HOME") + 1] == f"https://{domain}"
    # nothing outside the string literals but the define() calls
    assert re.sub(r"'(\\.|[^'\\])*'", "S", code).count("system") == 0


def test_domain_xml_keeps_the_literal_name(inv: InventoryCopy) -> None:
    """The domain XML (autoescaped template): <title> and <kk:display-name> round-trip."""
    inv.set_host("hersonissos", display_name=HOSTILE_DISPLAY_NAME)
    fleet = inv.load()
    m = fleet.get("hersonissos")
    keys = VmKeys(fixed_host_key(), fixed_client_public_key())
    root = ET.fromstring(compose(fleet, m, keys, "0123456789ab").domain)
    ns = {"kk": model.METADATA_NS}
    assert root.findtext("title") == HOSTILE_DISPLAY_NAME
    assert root.findtext("./metadata/kk:municipality/kk:display-name", namespaces=ns) == (
        HOSTILE_DISPLAY_NAME
    )
    spec = json.loads(root.findtext("./metadata/kk:municipality/kk:spec", namespaces=ns) or "")
    assert spec["display_name"] == HOSTILE_DISPLAY_NAME

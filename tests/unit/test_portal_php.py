"""The portal's PHP (plugins, set-up script) and theme, rendered with Ansible's own templating
and checked by the real PHP interpreter: every file parses (`php -l`), the inventory's values
reach PHP unchanged whatever they hold, every string of a Greek portal is Greek, and every
block the theme's templates name is one the plugin registers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from kallikratis import paths
from role_render import trusted

from tests.helpers.hostile import HOSTILE_DISPLAY_NAME

PORTAL = paths.PROJECT_ROOT / "roles" / "portal"
PLUGINS = PORTAL / "templates" / "var" / "lib" / "wordpress" / "wp-content" / "mu-plugins"
THEME = PORTAL / "files" / "var" / "lib" / "wordpress" / "wp-content" / "themes" / "kallikratis"
SETUP = "usr/local/lib/kallikratis/portal-setup.php.j2"
#: php-cli (scripts/system-packages.txt); missing, every test here fails rather than skips
PHP = shutil.which("php") or "/usr/bin/php"
#: what validation lets through in a contact field (quotes, ampersand, dollar, percent)
CONTACT = {
    "address": "Οδός 'Ελ.' \"Βενιζέλου\" 1 & $PATH 100%",
    "phone": "+30 2897 340000",
    "email": "info@hersonissos.gr",
    "hours": "Δευτέρα–Παρασκευή 08:00–15:00 ?>",
}


def render(template: str, language: str, **extra: Any) -> str:
    loader = DataLoader()
    variables = trusted(loader.load_from_file(str(PORTAL / "defaults" / "main.yml")))
    variables.update(trusted(loader.load_from_file(str(PORTAL / "vars" / "main.yml"))))
    variables.update(
        ansible_managed="Ansible managed",
        kallikratis_display_name=HOSTILE_DISPLAY_NAME,
        kallikratis_domain="hersonissos.crete.kallikratis.test",
        kallikratis_modules=["portal", "opendata"],
        kallikratis_language=language,
        kallikratis_branding={"colour": "#1f4e79", "logo": "/logo.png"},
        kallikratis_datasets=["budget_lines", "other_set"],
        kallikratis_contact=CONTACT,
        kallikratis_comment_ip_retention_days=14,
        kallikratis_nginx_snippet_dir="/etc/nginx/kallikratis.d",
    )
    variables.update(extra)
    text = (PORTAL / "templates" / template).read_text(encoding="utf-8")
    return str(
        Templar(loader=loader, variables=variables).template(
            trust_as_template(text), escape_backslashes=False
        )
    )


def _plugin_names() -> list[str]:
    return sorted(p.name.removesuffix(".j2") for p in PLUGINS.glob("*.php.j2"))


def php_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PHP), "-l", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("language", ["el", "en"])
@pytest.mark.parametrize("name", [*_plugin_names(), "portal-setup.php"])
def test_rendered_php_parses(tmp_path: Path, name: str, language: str) -> None:
    plugins = PLUGINS.relative_to(PORTAL / "templates")
    template = SETUP if name == "portal-setup.php" else f"{plugins}/{name}.j2"
    out = tmp_path / name
    out.write_text(render(template, language), encoding="utf-8")
    res = php_lint(out)
    assert res.returncode == 0, res.stdout + res.stderr


def test_lint_has_teeth(tmp_path: Path) -> None:
    broken = tmp_path / "broken.php"
    broken.write_text("<?php\n$x = 'a' 'b';\n")
    assert php_lint(broken).returncode != 0


def _config_from_php(tmp_path: Path, language: str) -> dict[str, Any]:
    """kallikratis_config() as PHP computes it from the rendered plugin (WordPress's hook
    functions replaced by no-ops: only the plugin's own data is under test here)."""
    plugin = tmp_path / "kallikratis-portal.php"
    plugin.write_text(
        render(f"{PLUGINS.relative_to(PORTAL / 'templates')}/kallikratis-portal.php.j2", language)
    )
    driver = tmp_path / "driver.php"
    driver.write_text(
        "<?php\ndefine('ABSPATH', '/usr/share/wordpress/');\n"
        "function add_action(...$a) {}\nfunction add_filter(...$a) {}\n"
        "function register_theme_directory(...$a) {}\n"
        f"require {json.dumps(str(plugin))};\n"
        "echo json_encode(kallikratis_config(), JSON_UNESCAPED_UNICODE);\n"
    )
    res = subprocess.run(
        [str(PHP), str(driver)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(json.loads(res.stdout))


@pytest.mark.parametrize("language", ["el", "en"])
def test_inventory_values_reach_php_unchanged(tmp_path: Path, language: str) -> None:
    config = _config_from_php(tmp_path, language)
    assert config["name"] == HOSTILE_DISPLAY_NAME
    assert config["contact"] == CONTACT
    assert config["controller"] == HOSTILE_DISPLAY_NAME  # no data_controller: the municipality
    assert config["language"] == language
    assert (config["opendata"], config["education"]) == ("/data/", "")
    assert config["datasets"] == ["budget_lines", "other_set"]
    assert config["retention_days"] == 14
    assert config["logo"] == "/logo.png"
    assert config["strings"]["contact"] == {"el": "Επικοινωνία", "en": "Contact"}[language]


def _strings() -> dict[str, dict[str, str]]:
    data = DataLoader().load_from_file(str(PORTAL / "vars" / "main.yml"))
    return {lang: dict(values) for lang, values in data["portal_strings"].items()}


def test_both_languages_have_every_string() -> None:
    strings = _strings()
    assert set(strings) == {"el", "en"}
    assert set(strings["el"]) == set(strings["en"])
    for key in strings["el"]:
        holes = [set(re.findall(r"\{\w+\}", strings[lang][key])) for lang in ("el", "en")]
        assert holes[0] == holes[1], key


def test_greek_strings_are_greek() -> None:
    """Any Latin word in a Greek string sits beside Greek text (e-mail, IP, WCAG, CSV)."""
    for key, value in _strings()["el"].items():
        for piece in re.split(r"<[^>]+>", re.sub(r"\{\w+\}", "", value)):
            if re.search(r"[A-Za-z]{3,}", piece):
                assert re.search(r"[\u0370-\u03ff]", piece), f"{key}: {piece!r}"


def _theme_blocks() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for html_file in sorted(THEME.glob("*/*.html")):
        blocks = re.findall(r"<!-- wp:([a-z0-9/-]+)( \{.*?\})? /?-->", html_file.read_text())
        found[f"{html_file.parent.name}/{html_file.name}"] = [
            (name, json.loads(attrs) if attrs else {}) for name, attrs in blocks
        ]
    return found


def test_theme_uses_only_registered_blocks_and_known_strings() -> None:
    plugin = (PLUGINS / "kallikratis-portal.php.j2").read_text()
    registered = {f"kallikratis/{n}" for n in re.findall(r"'([a-z-]+)' => fn\(\) =>", plugin)}
    registered.add("kallikratis/text")
    strings = _strings()["el"]
    blocks = _theme_blocks()
    assert {"parts/header.html", "parts/footer.html", "templates/index.html"} <= set(blocks)
    for where, used in blocks.items():
        for name, attrs in used:
            # no theme pattern (demo text, placeholder links) and no navigation block (its
            # fallback lists every page): the portal's own blocks render those
            assert not name.startswith(("pattern", "navigation", "twentytwentyfive/")), where
            if name.startswith("kallikratis/"):
                assert name in registered, f"{where}: {name}"
            if name == "kallikratis/text":
                assert attrs["key"] in strings, f"{where}: {attrs}"
    for where in blocks:
        if where.startswith("templates/"):
            names = [n for n, _ in blocks[where]]
            assert names[0] == "template-part" and names[-1] == "template-part", where


def test_a_logo_file_becomes_the_logo_url(tmp_path: Path) -> None:
    """The copied host_vars logo wins over branding.logo; without it, branding.logo."""
    plugin = f"{PLUGINS.relative_to(PORTAL / 'templates')}/kallikratis-portal.php.j2"
    with_file = render(plugin, "el", kallikratis_logo_file="/srv/inv/host_vars/h/logo.svg")
    assert '"logo": "/wp-content/uploads/kallikratis/logo.svg"' in with_file
    without = render(plugin, "el", kallikratis_logo_file="")
    assert '"logo": "/logo.png"' in without  # branding.logo of render()

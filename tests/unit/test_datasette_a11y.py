"""The opendata role's accessibility snippet, for real: the rendered nginx configuration in
front of a stand-in upstream that answers with Datasette's markup patterns (no lang on <html>,
unlabelled filter and sort fields, a CodeMirror-like field made on load), loaded in headless
Chromium and checked by axe-core: no serious or critical WCAG 2.1 AA violation once nginx has
rewritten it, several without it (the check has teeth).
"""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_nginx_config import render_tree, role_vars, running
from test_page_cache import _free_port

from tests.helpers.browser import SERIOUS, Browser
from tests.helpers.loopback import http_server, port

DATASETTE_LIKE = """<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>budget_lines</title></head>
<body><main><h1>budget_lines</h1>
<form class="filters" action="/data/opendata/budget_lines" method="get">
<select name="_filter_column"><option>code</option></select>
<select name="_filter_op"><option>=</option></select>
<input type="text" name="_filter_value" class="filter-value">
<select name="_sort" id="sort_by"><option>code</option></select>
<input type="submit" value="Apply" style="background:#67b2e6;color:#fff">
</form>
<script>window.onload = () => { const t = document.createElement("textarea");
t.setAttribute("autocorrect", "off"); document.querySelector("main").append(t); };</script>
</main></body></html>"""


class Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = DATASETTE_LIKE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    with http_server(Upstream) as url:
        yield port(url)


def _violations(tmp_path: Path, url: str) -> list[str]:
    with Browser(tmp_path / "profile", env=None) as browser:
        browser.goto(url)
        assert browser.evaluate("document.querySelector('textarea') !== null")
        return [v.id for v in browser.axe() if v.impact in SERIOUS]


def test_datasette_pages_pass_axe_through_nginx(tmp_path: Path, upstream: int) -> None:
    assert sorted(set(_violations(tmp_path, f"http://127.0.0.1:{upstream}/"))) == [
        "color-contrast",
        "html-has-lang",
        "label",
        "select-name",
    ], "the stand-in no longer shows Datasette's problems: the test would prove nothing"
    https, http_port = _free_port(), _free_port()
    root = tmp_path / "nginx"
    values = role_vars(root, upstream)
    conf = render_tree(root, values, https, http_port)
    # the unit tests' stand-in upstream would take the same port: this test brings its own
    conf.write_text(
        conf.read_text().replace(f"listen 127.0.0.1:{upstream};", "listen 127.0.0.1:1;")
    )
    a11y = root / "snippets" / "kallikratis-datasette-a11y.conf"
    snippet = root / "kallikratis.d" / "opendata.conf"
    snippet.write_text(snippet.read_text().replace(values["opendata_a11y_snippet"], str(a11y)))
    with running(conf, https):
        # plain HTTP on the port-80 server redirects; the browser takes the TLS one, the test
        # certificate is not trusted: ask Chromium to ignore that for this loopback page only
        url = f"https://127.0.0.1:{https}/data/opendata/budget_lines"
        with Browser(
            tmp_path / "profile2",
            host_rules="",
            env=None,
            extra_flags=["--ignore-certificate-errors"],
        ) as browser:
            browser.goto(url)
            assert browser.evaluate("document.documentElement.lang") == "el"
            serious = [str(v) for v in browser.axe() if v.impact in SERIOUS]
            assert serious == []
            labels = browser.evaluate(
                "[...document.querySelectorAll('select,textarea,input[type=text]')]"
                ".map(e => e.getAttribute('aria-label'))"
            )
            assert labels == ["Στήλη φίλτρου", "Τελεστής φίλτρου", "Τιμή φίλτρου"] + [
                "Ταξινόμηση κατά",
                "Ερώτημα SQL",
            ], labels

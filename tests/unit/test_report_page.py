"""The scorecard page (`report --html`) as a sysadmin's browser shows it: headless Chromium at a
laptop's 1280 px and a phone's 375 px. The table (14 checks and the use figures) is wider than
either; it must scroll inside its own keyboard-focusable region while the page keeps the
window's width, and axe-core finds no serious or critical WCAG 2.1 AA violation."""

from __future__ import annotations

from pathlib import Path

import pytest
from reportsupport import MakeEngine, cli, code, running_engine
from support import SLUGS, InventoryCopy

from tests.helpers.browser import SERIOUS, Browser

PAGE_WIDTH = "document.documentElement.scrollWidth"
TABLE_WIDTH = "document.querySelector('table').scrollWidth"
REGION = "document.querySelector('table').parentElement"


@pytest.fixture
def page(
    inv: InventoryCopy,
    make_engine: MakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    prom_url: str,
    tmp_path: Path,
) -> Path:
    engine = running_engine(inv, make_engine, SLUGS)
    path = tmp_path / "scorecard.html"
    result = cli(engine, monkeypatch, "--html", str(path), url=prom_url)
    assert code(result) == 5, result.output  # the hand-made scenario has red rows
    return path


@pytest.mark.parametrize("width", [1280, 375])
def test_the_table_scrolls_inside_the_page_not_the_page(
    page: Path, tmp_path: Path, width: int
) -> None:
    with Browser(tmp_path / "profile", env=None) as browser:
        browser.goto(page.as_uri(), width=width)
        table = browser.evaluate(TABLE_WIDTH)
        assert table > width, f"the table is {table} px: the test would prove nothing"
        assert browser.evaluate(PAGE_WIDTH) <= width, "the whole page scrolls sideways"
        assert browser.evaluate(f"{REGION}.scrollWidth > {REGION}.clientWidth")
        assert browser.evaluate(f"{REGION}.tabIndex") == 0, "keyboard users cannot scroll it"
        serious = [str(v) for v in browser.axe() if v.impact in SERIOUS]
        assert serious == []

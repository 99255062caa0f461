"""`verify` reports each municipality as its checks start and finish (on stderr, never in
--json stdout). A real pytest child with testinfra and the progress plugin runs a stand-in
suite whose tests never touch their host: nothing is contacted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import model, verify
from kallikratis.cli import main_group
from kallikratis.errors import ProvisionError
from kallikratis.verifyprogress import Tracker
from support import InventoryCopy

SUITE = """
def test_first(host):
    assert host.backend.get_hostname()  # names the host; opens no connection

def test_second(host):
    assert host.backend.get_hostname() != "minoa-pediada"

def test_of_no_municipality():
    pass
"""


@pytest.fixture
def stand_in(
    inv: InventoryCopy, tmp_path: Path, vault_password: Path, monkeypatch: pytest.MonkeyPatch
) -> model.Fleet:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "test_stand_in.py").write_text(SUITE)
    monkeypatch.setattr(verify, "SUITES", suites)
    monkeypatch.setattr(verify, "close_masters", lambda *_: None)  # no ssh at all
    return inv.load()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.threads: set[str] = set()

    def __call__(self, slug: str, phase: str) -> None:
        self.calls.append((slug, phase))
        self.threads.add(threading.current_thread().name)

    def of(self, slug: str) -> list[str]:
        return [phase for s, phase in self.calls if s == slug]


def test_verify_calls_progress_as_each_municipality_starts_and_finishes(
    stand_in: model.Fleet, state_dir: Path
) -> None:
    progress = Recorder()
    checks, _ = verify.run(stand_in, list(stand_in.municipalities), state_dir, progress=progress)
    for slug in ("archanes-asterousia", "hersonissos"):
        assert progress.of(slug) == [
            "checking 1/2: test_first",
            "checking 2/2: test_second",
            "passed",
        ]
    assert progress.of("minoa-pediada")[-1] == "failed"
    assert {s for s, _ in progress.calls} == {m.slug for m in stand_in.municipalities}
    # the checks themselves are what they were without progress
    failed = {(c.slug, c.name) for c in checks if not c.passed}
    assert failed == {("minoa-pediada", "test_second")}
    assert ("*", "test_of_no_municipality", True) in {(c.slug, c.name, c.passed) for c in checks}


def test_without_progress_verify_runs_as_before(stand_in: model.Fleet, state_dir: Path) -> None:
    checks, _ = verify.run(stand_in, [stand_in.get("hersonissos")], state_dir)
    assert sorted((c.name, c.passed) for c in checks if c.slug == "hersonissos") == [
        ("test_first", True),
        ("test_second", True),
    ]


def test_tracker_reports_what_never_finished() -> None:
    progress = Recorder()
    tracker = Tracker(["a", "b", "c"], progress)
    tracker.handle({"collected": {"a": 2, "b": 1, "*": 4}})
    tracker.handle({"start": "a", "test": "t1"})
    tracker.handle({"done": "a", "test": "t1", "passed": True})
    tracker.handle({"start": "b", "test": "t1"})
    tracker.handle({"done": "b", "test": "t1", "passed": True})
    tracker.handle({"start": "zzz", "test": "t1"})  # not ours: ignored
    tracker.close()  # the child died before a's second check
    assert progress.of("a") == ["checking 1/2: t1", "failed"]
    assert progress.of("b") == ["checking 1/1: t1", "passed"]
    assert progress.of("c") == ["no checks"]
    assert progress.of("zzz") == []


def test_verify_json_keeps_progress_on_stderr(inv: InventoryCopy, stand_in: model.Fleet) -> None:
    result = CliRunner().invoke(main_group, ["-i", str(inv.root), "verify", "--json"])
    # minoa-pediada fails test_second (main() maps the error to its exit code 5)
    assert isinstance(result.exception, ProvisionError), result.output
    data = json.loads(result.stdout)  # nothing but the JSON document
    assert {c["slug"] for c in data["checks"]} >= {"hersonissos", "minoa-pediada"}
    assert "hersonissos: checking 1/2: test_first" in result.stderr
    assert "hersonissos: passed" in result.stderr
    assert "minoa-pediada: failed" in result.stderr

"""The audit journal: round trip, failures, interrupted runs, git capture, history (API and CLI)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import paths
from kallikratis.cli import main_group
from kallikratis.errors import ProvisionError
from kallikratis.journal import Journal, git_state
from support import InventoryCopy

ARGV = ["kallikratis", "-i", "inventories/crete", "up", "hersonissos", "minoa-pediada"]


def test_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with journal.run("up", ARGV, None, ["hersonissos", "minoa-pediada"]) as rec:
        rec.result("hersonissos", "created", "", 12.5)
        rec.artifacts(tmp_path / "runs" / "x" / "artifacts")
    [run] = journal.runs()
    assert (run.command, run.argv, run.status, run.exit_code) == ("up", tuple(ARGV), "ok", 0)
    assert run.pid == os.getpid() and run.user and run.started <= (run.ended or "")
    assert run.started.endswith("+00:00")
    assert run.artifacts == str(tmp_path / "runs" / "x" / "artifacts")
    assert [(r.slug, r.result, r.seconds) for r in run.results] == [
        ("hersonissos", "created", 12.5),
        ("minoa-pediada", "incomplete", None),
    ]
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sudo_user_recorded_but_no_other_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "eleni")
    monkeypatch.setenv("SOME_SECRET", "hunter2")
    journal = Journal(tmp_path)
    with journal.run("destroy", ["kallikratis", "destroy", "x"], None, ["x"]):
        pass
    assert journal.runs()[0].sudo_user == "eleni"
    assert b"hunter2" not in (tmp_path / "journal.sqlite").read_bytes()
    assert all(b"hunter2" not in p.read_bytes() for p in tmp_path.glob("journal.sqlite*"))


def test_failure_is_recorded_and_reraised(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with pytest.raises(ProvisionError), journal.run("up", ARGV, None, ["hersonissos"]) as rec:
        rec.result("hersonissos", "failed", "SSH did not answer", 600.0)
        raise ProvisionError("failed: hersonissos")
    with pytest.raises(ZeroDivisionError), journal.run("up", ARGV, None, []):
        _ = 1 / 0
    second, first = journal.runs()
    assert (first.status, first.exit_code, first.message) == ("failed", 5, "failed: hersonissos")
    assert first.results[0].detail == "SSH did not answer"
    assert (second.status, second.exit_code) == ("failed", 1)
    assert "ZeroDivisionError" in second.message


def test_killed_run_shows_as_interrupted(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from kallikratis.journal import Journal
        Journal(Path({str(tmp_path)!r})).start("up", ["kallikratis", "up", "a"], None, ["a"])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert proc.returncode == -9
    journal = Journal(tmp_path)
    live = journal.start("up", ["kallikratis", "up", "b"], None, ["b"])  # this process: alive
    runs = {r.id: r for r in journal.runs()}
    assert runs[live.id].status == "running"
    assert runs[live.id - 1].status == "interrupted"
    assert runs[live.id - 1].ended is None


def test_reused_pid_is_not_taken_for_the_run(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    rec = journal.start("up", ARGV, None, ["a"])
    with sqlite3.connect(journal.path) as db:  # same pid, but a process started at another time
        db.execute("UPDATE runs SET pid_start = '1' WHERE id = ?", (rec.id,))
    assert journal.runs()[0].status == "interrupted"


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()


def test_git_commit_and_dirty_flag(inv: InventoryCopy, tmp_path: Path) -> None:
    repo = inv.root.parent
    (repo / "README").write_text("outside the inventory\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "fleet")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(inv.root) == git_state(inv.hosts)
    assert (git_state(inv.root).commit, git_state(inv.root).dirty) == (head, False)
    (repo / "README").write_text("changed, but not in the inventory\n")
    assert git_state(inv.root).dirty is False
    inv.set_host("hersonissos", display_name="Δήμος Χερσονήσου (νέο)")
    assert git_state(inv.root).dirty is True
    journal = Journal(tmp_path / "state")
    with journal.run("up", ARGV, inv.root, ["hersonissos"]):
        pass
    run = journal.runs()[0]
    assert (run.git_commit, run.git_dirty, run.inventory) == (head, True, str(inv.root))


def test_no_repository_or_no_git_is_tolerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "inventory"
    plain.mkdir()
    assert (git_state(plain).commit, git_state(plain).dirty) == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert git_state(plain).commit is None


def _fill(journal: Journal) -> None:
    with journal.run("up", ARGV, None, ["hersonissos", "minoa-pediada"]) as rec:
        rec.result("hersonissos", "created")
        rec.result("minoa-pediada", "unchanged")
    with journal.run("destroy", ["kallikratis", "destroy", "--yes", "knossos"], None, ["knossos"]):
        pass
    with pytest.raises(ProvisionError), journal.run("deploy", ARGV, None, ["hersonissos"]):
        raise ProvisionError("deploy failed on: hersonissos")


def test_history_filter_and_limit(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _fill(journal)
    assert [r.command for r in journal.runs()] == ["deploy", "destroy", "up"]
    assert [r.command for r in journal.runs("hersonissos")] == ["deploy", "up"]
    assert [r.command for r in journal.runs("knossos")] == ["destroy"]
    assert journal.runs("nowhere") == []
    assert [r.command for r in journal.runs(limit=1)] == ["deploy"]


def test_history_cli_json_and_table() -> None:
    _fill(Journal(paths.state_dir()))
    runner = CliRunner()
    result = runner.invoke(main_group, ["history", "--json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [r["command"] for r in runs] == ["deploy", "destroy", "up"]
    assert runs[0]["status"] == "failed" and runs[0]["exit_code"] == 5
    assert {r["slug"]: r["result"] for r in runs[2]["results"]} == {
        "hersonissos": "created",
        "minoa-pediada": "unchanged",
    }
    result = runner.invoke(main_group, ["history", "knossos", "--json"])
    assert [r["command"] for r in json.loads(result.output)["runs"]] == ["destroy"]
    table = runner.invoke(main_group, ["history", "hersonissos", "--limit", "5"])
    assert table.exit_code == 0, table.output
    assert "hersonissos: created" in table.output and "failed (5)" in table.output
    assert "knossos" not in table.output and "minoa-pediada:" not in table.output
    assert "hersonissos: incomplete" in table.output  # the failed deploy reported no result


def test_history_on_an_empty_state_dir() -> None:
    result = CliRunner().invoke(main_group, ["history"])
    assert result.exit_code == 0 and "no runs recorded" in result.output
    assert not (paths.state_dir() / "journal.sqlite").exists()

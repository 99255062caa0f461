"""Run locks: overlapping runs refuse at once naming the holder; disjoint runs proceed;
a holder killed with SIGKILL leaves no stale lock. The holder is always another process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import paths, runlock
from kallikratis.cli import main_group
from kallikratis.errors import LockedError
from kallikratis.journal import Journal
from support import InventoryCopy

HOLDER_ARGV = ["kallikratis", "-i", "inventories/crete", "up", "hersonissos", "minoa-pediada"]


class Holder:
    """A child process that holds locks on some municipalities until it is killed."""

    def __init__(self, state: Path, slugs: list[str]) -> None:
        code = textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            from kallikratis import runlock
            held = runlock.acquire(Path({str(state)!r}), "crete", {slugs!r}, {HOLDER_ARGV!r})
            print("locked", flush=True)
            time.sleep(120)
            """
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -9


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def holder(state: Path) -> Iterator[Holder]:
    h = Holder(state, ["hersonissos", "minoa-pediada"])
    yield h
    if h.proc.poll() is None:
        h.kill()
    if h.proc.stdout:
        h.proc.stdout.close()


def test_overlap_refuses_at_once_naming_the_holder(state: Path, holder: Holder) -> None:
    start = time.monotonic()
    with pytest.raises(LockedError) as err:
        runlock.acquire(state, "crete", ["archanes-asterousia", "hersonissos"], ["me"])
    assert time.monotonic() - start < 2
    message = err.value.message
    assert err.value.exit_code == 6
    assert f"pid {holder.proc.pid}" in message
    assert "kallikratis -i inventories/crete up hersonissos minoa-pediada" in message
    assert "hersonissos: held by" in message and "started 20" in message
    assert "archanes-asterousia" not in message  # free: not among the overlapping ones


def test_disjoint_runs_proceed(state: Path, holder: Holder) -> None:
    with runlock.hold(state, "crete", ["archanes-asterousia"], ["me"]):
        pass
    with runlock.hold(state, "other-fleet", ["hersonissos"], ["me"]):  # same name, other fleet
        pass


def test_all_or_nothing(state: Path, holder: Holder) -> None:
    with pytest.raises(LockedError):
        runlock.acquire(state, "crete", ["archanes-asterousia", "minoa-pediada"], ["me"])
    # the refused run released what it had taken: another process can lock it now
    code = (
        "from pathlib import Path; from kallikratis import runlock; "
        f"runlock.acquire(Path({str(state)!r}), 'crete', ['archanes-asterousia'], ['x'])"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sigkill_leaves_no_stale_lock(state: Path, holder: Holder) -> None:
    with pytest.raises(LockedError):
        runlock.acquire(state, "crete", ["hersonissos"], ["me"])
    holder.kill()
    with runlock.hold(state, "crete", ["hersonissos", "minoa-pediada"], ["me", "again"]):
        content = json.loads((runlock.lock_dir(state, "crete") / "hersonissos.lock").read_text())
        assert content["pid"] == os.getpid() and content["argv"] == ["me", "again"]
    assert (runlock.lock_dir(state, "crete") / "hersonissos.lock").read_text() == ""


def test_up_refuses_while_another_run_holds_a_municipality(
    inv: InventoryCopy, vault_password: Path
) -> None:
    """The wiring: `up` takes the lock before changing anything, and a refusal is not journaled."""
    inv.use_test_driver()
    h = Holder(paths.state_dir(), ["hersonissos"])
    try:
        result = CliRunner().invoke(main_group, ["-i", str(inv.root), "up", "--all", "--no-wait"])
        assert isinstance(result.exception, LockedError), result.output
        assert f"pid {h.proc.pid}" in result.exception.message
        assert Journal(paths.state_dir()).runs() == []
        assert not (paths.state_dir() / "fleets" / "crete" / "host-keys").exists()
        ok = CliRunner().invoke(
            main_group, ["-i", str(inv.root), "up", "minoa-pediada", "--no-wait"]
        )
        assert ok.exit_code == 0, ok.output
    finally:
        h.kill()
    [run] = Journal(paths.state_dir()).runs()
    assert (run.command, run.status, run.inventory) == ("up", "ok", str(inv.root))
    assert [(r.slug, r.result) for r in run.results] == [("minoa-pediada", "created")]

"""Patch results handed to the monitoring on control: the textfile it writes, and what happens
when control cannot be reached."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kallikratis import patchmetrics
from kallikratis.guest import Guest, GuestError
from support import SLUGS, InventoryCopy


class LocalGuest(Guest):
    """Runs the script with sh on this machine, the textfile directory moved under *root*."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls = 0

    def run(self, script: str, timeout: float = 0, check: bool = True) -> str:
        self.calls += 1
        script = script.replace(patchmetrics.TEXTFILE_DIR, str(self.root))
        return subprocess.run(
            ["sh", "-euc", script], check=True, capture_output=True, text=True
        ).stdout


class DownGuest(Guest):
    def __init__(self) -> None:
        pass

    def run(self, script: str, timeout: float = 0, check: bool = True) -> str:
        raise GuestError("control: SSH failed: Connection timed out")


def test_results_land_in_controls_textfile_directory(inv: InventoryCopy, tmp_path: Path) -> None:
    inv.add_central()
    fleet = inv.load()
    guest = LocalGuest(tmp_path / "textfiles")
    outcomes = [(SLUGS[0], "patched"), (SLUGS[1], "failed"), (SLUGS[2], "skipped")]
    assert patchmetrics.publish(fleet, outcomes, 1_700_000_000.0, lambda m: guest) == ""
    files = sorted(p.name for p in (tmp_path / "textfiles").iterdir())
    assert files == [f"kallikratis-patch-{SLUGS[0]}.prom", f"kallikratis-patch-{SLUGS[1]}.prom"]
    failed = (tmp_path / "textfiles" / files[1]).read_text()
    assert f'kallikratis_patch_last_success{{municipality="{SLUGS[1]}"}} 0' in failed
    assert (
        f'kallikratis_patch_last_run_timestamp_seconds{{municipality="{SLUGS[1]}"}} 1700000000'
        in failed
    )
    ok = (tmp_path / "textfiles" / files[0]).read_text()
    assert f'kallikratis_patch_last_success{{municipality="{SLUGS[0]}"}} 1' in ok


def test_the_textfile_is_valid_exposition_format() -> None:
    # promtool: Debian's prometheus package (scripts/system-packages.txt)
    text = patchmetrics.textfile("hersonissos", "failed", 1_700_000_000.0)
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_unreachable_control_is_a_warning_not_a_failure(inv: InventoryCopy) -> None:
    inv.add_central()
    fleet = inv.load()
    warning = patchmetrics.publish(fleet, [(SLUGS[0], "failed")], 0.0, lambda m: DownGuest())
    assert "control" in warning and "Connection timed out" in warning


def test_without_control_or_results_nothing_is_sent(inv: InventoryCopy, tmp_path: Path) -> None:
    guest = LocalGuest(tmp_path)
    assert patchmetrics.publish(inv.load(), [(SLUGS[0], "failed")], 0.0, lambda m: guest) == ""
    inv.add_central()
    assert patchmetrics.publish(inv.load(), [(SLUGS[0], "planned")], 0.0, lambda m: guest) == ""
    assert guest.calls == 0

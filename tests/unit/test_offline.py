"""Reviewing an inventory needs no hypervisor: `render` and `validate` (without --offline)
against a libvirt that does not answer. The URI used fails fast and locally: a UNIX socket
that does not exist (what a laptop without libvirtd sees), never a remote host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import InventoryCopy

WHAT = ("domain", "user-data", "meta-data", "network-config")


@pytest.fixture
def unreachable(inv: InventoryCopy, tmp_path: Path, vault_password: Path) -> str:
    uri = f"qemu+unix:///system?socket={tmp_path / 'no-libvirtd' / 'libvirt-sock'}"
    inv.set_hypervisor(libvirt_uri=uri)
    return uri


def _kk(inv: InventoryCopy, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KALLIKRATIS_INVENTORY": str(inv.root), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-c", "from kallikratis.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize("what", WHAT)
def test_render_works_without_a_hypervisor(inv: InventoryCopy, unreachable: str, what: str) -> None:
    offline = _kk(inv, "render", "hersonissos", "--what", what)
    assert offline.returncode == 0, offline.stderr
    assert "hypervisor hv01" in offline.stderr and "unreachable" in offline.stderr
    assert unreachable in offline.stderr.replace("\n", "")
    if what == "domain":
        assert "<kk:image>" in offline.stdout
        assert "image version in <kk:image>" in offline.stderr.replace("\n", " ")
    # no state offline: the address is the deterministic default, and stderr says so
    assert "used here: the deterministic default 10.42.0." in offline.stderr.replace("\n", " ")
    # the same document a reachable hypervisor without that VM gives
    inv.use_test_driver()
    online = _kk(inv, "render", "hersonissos", "--what", what)
    assert online.returncode == 0, online.stderr
    assert online.stdout == offline.stdout
    assert "unreachable" not in online.stderr


def test_validate_skips_the_capacity_check_of_an_unreachable_hypervisor(
    inv: InventoryCopy, unreachable: str
) -> None:
    proc = _kk(inv, "validate")
    assert proc.returncode == 0, proc.stderr
    stderr = proc.stderr.replace("\n", "")
    assert "capacity check of hv01 skipped: hypervisor unreachable" in stderr
    assert unreachable in stderr
    assert "is valid" in proc.stdout and "capacity not checked on hv01" in proc.stdout


def test_validate_json_names_the_skipped_check(inv: InventoryCopy, unreachable: str) -> None:
    proc = _kk(inv, "validate", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["valid"] is True and data["capacity_checked"] is False
    assert list(data["capacity_skipped"]) == ["hv01"]
    assert unreachable in data["capacity_skipped"]["hv01"]


def test_an_invalid_inventory_is_still_invalid_offline(
    inv: InventoryCopy, unreachable: str
) -> None:
    inv.set_host("hersonissos", modules=["blog"])
    proc = _kk(inv, "validate")
    assert proc.returncode == 2
    assert f"{inv.hosts}: hersonissos: modules:" in proc.stderr.replace("\n", "")


def test_capacity_is_still_checked_where_the_hypervisor_answers(inv: InventoryCopy) -> None:
    inv.use_test_driver()
    inv.set_profile("small", vcpus=32)
    proc = _kk(inv, "validate", "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["capacity_skipped"] == {}
    assert any("wants 32 vCPUs" in p["message"] for p in data["problems"])

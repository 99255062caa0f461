"""End-to-end fixtures: a real libvirtd (the lab's), real QEMU VMs, a fleet of our own.

These tests run inside the lab's network namespace (`scripts/lab test`); they fail, never skip,
when the lab is missing. The fleet `e2e` uses its own network (10.77.0.0/24) and state
directory, so it never touches the lab's `crete` VMs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
URI = "qemu:///system"
FLEET = "e2e"


@dataclass
class Fleet:
    inventory: Path
    state: Path
    env: dict[str, str]

    def kk(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "kallikratis.cli", "-i", str(self.inventory), *args]
        done = subprocess.run(
            argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"kallikratis {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def kk_json(self, *args: str, check: bool = True) -> dict:
        return json.loads(self.kk(*args, "--json", check=check).stdout)

    def popen(self, *args: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "kallikratis.cli", "-i", str(self.inventory), *args]
        return subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )


def _require_lab() -> libvirt.virConnect:
    if not os.environ.get("LAB_NS"):
        pytest.fail("end-to-end tests run inside the lab: use `scripts/lab test`", pytrace=False)
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"no libvirtd at {URI} ({exc}); use `scripts/lab test`", pytrace=False)


@pytest.fixture(scope="session")
def conn() -> Iterator[libvirt.virConnect]:
    c = _require_lab()
    yield c
    c.close()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, conn: libvirt.virConnect) -> Iterator[Fleet]:
    inv = tmp_path_factory.mktemp("inventory") / "e2e"
    # not the lab's vault files: they are encrypted with the lab's vault password
    shutil.copytree(ROOT / "inventories" / "crete", inv, ignore=shutil.ignore_patterns("vault.yml"))
    fleet_file = inv / "group_vars" / "all" / "fleet.yml"
    data = yaml.safe_load(fleet_file.read_text())
    data["fleet_name"] = FLEET
    data["fleet_domain"] = "e2e.kallikratis.test"
    data["fleet_network"].update(
        name="kallikratis-e2e",
        cidr="10.77.0.0/24",
        gateway="10.77.0.1",
        dns=["10.77.0.1"],
        bridge="kk-e2e",
    )
    fleet_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    state = tmp_path_factory.mktemp("state")
    env = dict(
        os.environ,
        KALLIKRATIS_STATE_DIR=str(state),
        KALLIKRATIS_DOMAIN_TYPE="qemu",
        KALLIKRATIS_IMAGE_CACHE=os.environ.get(
            "KALLIKRATIS_IMAGE_CACHE", "/var/lib/kallikratis/images"
        ),
    )
    env.pop("KALLIKRATIS_INVENTORY", None)
    f = Fleet(inv, state, env)
    f.kk("destroy", "--all", "--yes")  # leftovers of an interrupted earlier run, if any
    yield f
    # leave nothing behind, whatever happened
    f.kk("destroy", "--all", "--yes", check=False)
    try:
        net = conn.networkLookupByName("kallikratis-e2e")
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError:
        pass

"""Plain `ansible-inventory --list` sees what Kallikratis computes (plugins/vars/kallikratis.py):
one computation, no generated copy of the inventory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kallikratis import inventory, paths
from kallikratis.stackvars import municipality_vars
from support import CRETE, SLUGS

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
UNSAFE = "__ansible_unsafe"  # how ansible-core 2.19 lists a value it will never template


def _plain(value: Any) -> Any:
    """The listed value without Ansible's unsafe wrapper (a vars plugin's strings are data,
    not templates: a hostile display name stays text)."""
    if isinstance(value, dict):
        if set(value) == {UNSAFE}:
            return value[UNSAFE]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    """`ansible-inventory -i inventories/crete --list` from a directory holding a copy of the
    shipped inventory (without any vault.yml a lab run may have left), with the repository's
    ansible.cfg and a private state directory."""
    work = tmp_path_factory.mktemp("ansible-inventory")
    copy = work / "inventories" / "crete"
    shutil.copytree(CRETE, copy, ignore=shutil.ignore_patterns("vault.yml"))
    state = work / "state"
    state.mkdir(mode=0o700)
    password = state / "vault-password"
    password.write_text("unit-test-vault-password\n")
    password.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KALLIKRATIS_"))}
    env.update(
        ANSIBLE_CONFIG=str(paths.PROJECT_ROOT / "ansible.cfg"),
        KALLIKRATIS_STATE_DIR=str(state),
        ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
        # the addresses `kallikratis deploy` hands down (none of these VMs exists): the plugin
        # then reads no libvirt, never the machine's own qemu:///system
        KALLIKRATIS_ADDRESSES="{}",
        PYTHONPATH=os.pathsep.join(
            [str(paths.PROJECT_ROOT / "cli"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    proc = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", "inventories/crete", "--list"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return _plain(json.loads(proc.stdout)), copy, state


def test_every_municipality_gets_what_the_model_computes(
    listed: tuple[dict[str, Any], Path, Path],
) -> None:
    data, copy, state = listed
    fleet = inventory.load(copy)
    hostvars = data["_meta"]["hostvars"]
    assert sorted(data["municipalities"]["hosts"]) == sorted(SLUGS)
    for m in fleet.municipalities:
        expected = municipality_vars(fleet, m, state)
        got = hostvars[m.slug]
        assert {k: got.get(k) for k in expected} == expected, m.slug


def test_connection_values_are_the_pinned_ones(
    listed: tuple[dict[str, Any], Path, Path],
) -> None:
    data, copy, state = listed
    fleet = inventory.load(copy)
    for m in fleet.municipalities:
        got = data["_meta"]["hostvars"][m.slug]
        assert got["ansible_host"] == str(m.ip)
        assert got["ansible_user"] == fleet.admin_user
        assert got["ansible_ssh_private_key_file"] == str(state / "ssh" / "id_ed25519")
        args = got["ansible_ssh_common_args"].split()
        known_hosts = state / "fleets" / fleet.name / "known_hosts"
        for option in (
            f"UserKnownHostsFile={known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
        ):
            assert args[args.index(option) - 1] == "-o", option
        assert got["kallikratis_domain"] == m.domain == f"{m.slug}.crete.kallikratis.test"
        assert got["kallikratis_modules"] == list(m.modules)
    hersonissos = data["_meta"]["hostvars"]["hersonissos"]
    assert hersonissos["kallikratis_modules"] == ["portal", "opendata", "education"]


def test_the_addresses_kallikratis_hands_down_are_the_ones_ansible_uses(tmp_path: Path) -> None:
    """`kallikratis deploy` and `patch` hand the VMs' actual addresses to the plugin."""
    fleet = inventory.load(CRETE)
    other = next(
        f"10.42.0.{n}"
        for n in range(200, 250)
        if all(str(m.ip) != f"10.42.0.{n}" for m in fleet.municipalities)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KALLIKRATIS_"))}
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "vault-password").write_text("unit-test-vault-password\n")
    env.update(
        ANSIBLE_CONFIG=str(paths.PROJECT_ROOT / "ansible.cfg"),
        KALLIKRATIS_STATE_DIR=str(state),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        KALLIKRATIS_ADDRESSES=json.dumps({"hersonissos": other}),
        PYTHONPATH=str(paths.PROJECT_ROOT / "cli"),
    )
    copy = tmp_path / "crete"
    shutil.copytree(CRETE, copy, ignore=shutil.ignore_patterns("vault.yml"))
    proc = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(copy), "--host", "hersonissos"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = _plain(json.loads(proc.stdout))
    assert got["ansible_host"] == got["kallikratis_ip"] == other


def test_hypervisors_get_no_municipality_values(
    listed: tuple[dict[str, Any], Path, Path],
) -> None:
    data, _, _ = listed
    hv = data["_meta"]["hostvars"]["hv01"]
    assert "ansible_host" not in hv and not any(k.startswith("kallikratis_") for k in hv)

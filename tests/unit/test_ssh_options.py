"""The pinned SSH options: exactly these, and the same source for all three SSH paths."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from kallikratis import model, ssh, stackvars, verify
from kallikratis.paths import StateDir
from kallikratis.ssh import SshTarget


def _target(state_dir: Path, fleet: model.Fleet, m: model.Municipality) -> SshTarget:
    state = StateDir(state_dir)
    return SshTarget(
        fleet.admin_user, str(m.ip), state.client_key, state.fleet(fleet.name).known_hosts
    )


def _ansible_args(state_dir: Path, fleet: model.Fleet, m: model.Municipality) -> list[str]:
    return shlex.split(stackvars.municipality_vars(fleet, m, state_dir)["ansible_ssh_common_args"])


def _ssh_config(state_dir: Path, fleet: model.Fleet, slug: str) -> list[str]:
    text = verify.write_ssh_config(fleet, state_dir).read_text()
    block = text.split(f"Host {slug}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_the_option_sets_are_what_they_always_were(
    test_fleet: model.Fleet, state_dir: Path
) -> None:
    m = test_fleet.get("hersonissos")
    kh = StateDir(state_dir).fleet(test_fleet.name).known_hosts
    key = StateDir(state_dir).client_key
    assert _target(state_dir, test_fleet, m).options() == [
        *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"),
        *("-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null"),
        *("-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i", str(key)),
    ]
    args = _ansible_args(state_dir, test_fleet, m)
    assert args[::2] == ["-o"] * 4
    assert set(args[1::2]) == {
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={kh}",
        "GlobalKnownHostsFile=/dev/null",
        "IdentitiesOnly=yes",
    }
    assert stackvars.municipality_vars(test_fleet, m, state_dir)[
        "ansible_ssh_private_key_file"
    ] == str(key)
    assert set(_ssh_config(state_dir, test_fleet, m.slug)) == {
        f"HostName {m.ip}",
        f"User {test_fleet.admin_user}",
        f"IdentityFile {key}",
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {kh}",
        "GlobalKnownHostsFile /dev/null",
        "StrictHostKeyChecking yes",
        "BatchMode yes",
        "ConnectTimeout 10",
        "ControlMaster auto",
        f"ControlPath {verify.control_path('')}",
        "ControlPersist 120",
    }


def test_all_three_ssh_paths_take_the_pinned_options_from_one_place(
    test_fleet: model.Fleet, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = test_fleet.get("hersonissos")

    def marked(known_hosts: Path) -> list[tuple[str, str]]:
        return [("VisualHostKey", "no"), *real(known_hosts)]

    real = ssh.pinned_options
    monkeypatch.setattr(ssh, "pinned_options", marked)
    assert "VisualHostKey=no" in _target(state_dir, test_fleet, m).options()
    assert "VisualHostKey=no" in _ansible_args(state_dir, test_fleet, m)
    assert "VisualHostKey no" in _ssh_config(state_dir, test_fleet, m.slug)

"""Secrets and local privilege: the state directory is 0700 with 0600 files, and every SSH
control socket (Ansible's, mitogen's, verify's) lives in its 0700 ``cp/``, never in /tmp."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from kallikratis import ansible, model, paths, verify
from kallikratis.errors import KallikratisError
from kallikratis.journal import Journal
from kallikratis.keys import KeyStore
from kallikratis.paths import StateDir
from support import install_fixed_client_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_state_directory_made_by_an_older_version_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fleet_dir = state / "fleets" / "crete" / "host-keys"
    fleet_dir.mkdir(parents=True, mode=0o755)
    for d in (state, state / "fleets", state / "fleets" / "crete", fleet_dir):
        d.chmod(0o755)
    (fleet_dir / "hersonissos.vault").write_text("x")
    (fleet_dir / "hersonissos.vault").chmod(0o644)
    (state / "fleets" / "crete" / "known_hosts").write_text("x")
    (state / "fleets" / "crete" / "known_hosts").chmod(0o644)
    (state / "vault-password").write_text("x")
    (state / "vault-password").chmod(0o644)
    StateDir(state).secure()
    for d in (state, state / "fleets", state / "fleets" / "crete", fleet_dir, state / "cp"):
        assert _mode(d) == 0o700, d
    for f in (
        fleet_dir / "hersonissos.vault",
        state / "fleets" / "crete" / "known_hosts",
        state / "vault-password",
    ):
        assert _mode(f) == 0o600, f


def test_fresh_state_directory_and_journal_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / "state"
        Journal(state).start("up", ["kallikratis", "up"], None, ["hersonissos"])
        assert _mode(state) == 0o700
        assert _mode(state / "journal.sqlite") == 0o600
    finally:
        os.umask(old)


def test_secrets_written_by_the_key_store_are_0600(
    test_fleet: model.Fleet, tmp_path: Path, vault_password: Path
) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / "state"
        keys = KeyStore(state, test_fleet.name)
        keys.ensure_client_key()
        pair = keys.host_key("hersonissos")
        assert pair is not None
        keys.write_known_hosts({"hersonissos": ("10.0.0.5", pair.public_openssh)})
    finally:
        os.umask(old)
    for path in state.rglob("*"):
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(state) == 0o700


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to hand a directory to another user (the suite runs as root)")
    state = tmp_path / "state"
    (state / "cp").mkdir(parents=True)
    os.chown(state / "cp", 65534, 65534)
    with pytest.raises(KallikratisError, match="belongs to uid 65534"):
        StateDir(state).secure()


def test_a_symlink_in_place_of_the_socket_directory_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "cp").symlink_to("/tmp")
    with pytest.raises(KallikratisError, match="not a symlink"):
        StateDir(state).secure()


def test_ansible_sockets_are_in_the_state_directory(short_state: Path) -> None:
    env, _strategy = ansible.runner_environment(short_state)
    cp = short_state / "cp"
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(cp)
    assert env["TMPDIR"] == str(cp)  # mitogen's mux sockets (tempfile.mktemp) go there
    assert "/tmp/.kk" not in repr(env)


def test_ansible_cfg_names_no_shared_tmp() -> None:
    text = (paths.PROJECT_ROOT / "ansible.cfg").read_text()
    line = next(x for x in text.splitlines() if x.startswith("control_path_dir"))
    assert line == "control_path_dir = ~/.ansible/cp"


def test_verify_ssh_config_puts_its_masters_in_the_private_directory(
    test_fleet: model.Fleet, short_state: Path
) -> None:
    text = verify.write_ssh_config(test_fleet, short_state).read_text()
    cp = short_state / "cp"
    assert f"  ControlPath {cp}/v-%C" in text.splitlines()
    assert "/tmp/.kk" not in text
    assert _mode(cp) == 0o700
    assert _mode(short_state) == 0o700
    # the longest socket OpenSSH makes there still fits sun_path
    assert len(f"{cp}/v-{'0' * 40}.{'0' * 16}") <= paths.SOCKET_PATH_MAX


def test_too_long_a_state_path_means_no_multiplexing_not_tmp(
    test_fleet: model.Fleet, tmp_path: Path, vault_password: Path
) -> None:
    state = tmp_path / ("x" * 60) / "state"
    install_fixed_client_key(state)
    text = verify.write_ssh_config(test_fleet, state).read_text()
    assert "  ControlPath none" in text.splitlines()
    env, _strategy = ansible.runner_environment(state)
    assert "ControlMaster=no" in env["ANSIBLE_SSH_ARGS"]
    assert "TMPDIR" not in env


def test_a_state_directory_symlinked_by_the_administrator_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "kallikratis"
    real.mkdir(parents=True, mode=0o755)
    (tmp_path / "state").symlink_to(real)
    StateDir(tmp_path / "state").secure()
    assert _mode(real) == 0o700

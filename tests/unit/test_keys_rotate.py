"""`keys rotate` against a real OpenSSH server on 127.0.0.1 (a high port, its own host key,
an authorized_keys file in a tmp directory), started by the test; nothing but loopback.

sshd runs in a private mount namespace (unshare -m) that gives it its privilege-separation
user and directory without touching the machine's /etc/passwd or /run. The test needs root and
an sshd binary: /usr/sbin/sshd, or KALLIKRATIS_TEST_SSHD (with KALLIKRATIS_TEST_SSHD_LIBS for
its libraries when it is unpacked from the .deb rather than installed); without one it fails
(scripts/system-packages.txt installs openssh-server, never started: sshd_not_to_be_run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kallikratis import model, rotation, seedcustody
from kallikratis.keys import KeyStore, generate
from kallikratis.paths import StateDir
from kallikratis.provision import Engine
from kallikratis.ssh import SshTarget, login_works
from support import fixed_client_public_key

SSHD = os.environ.get("KALLIKRATIS_TEST_SSHD", "/usr/sbin/sshd")
Sshd = Callable[[str], int]  # authorized_keys text -> port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[Sshd, Path]]:
    """Start OpenSSH servers on loopback; yields (start, known_hosts)."""
    if os.geteuid() != 0 or not Path(SSHD).is_file() or not shutil.which("unshare"):
        pytest.fail(
            "needs root, unshare and an sshd binary: Debian's openssh-server, which "
            "`scripts/lab install` installs, or KALLIKRATIS_TEST_SSHD"
        )
    procs: list[subprocess.Popen[bytes]] = []
    known_hosts = tmp_path / "known_hosts"
    passwd = tmp_path / "passwd"
    passwd.write_text(
        Path("/etc/passwd").read_text() + "sshd:x:64999:65534::/nonexistent:/usr/sbin/nologin\n"
    )

    def start(authorized: str) -> int:
        d = tmp_path / f"vm{len(procs)}"
        (d / "home" / ".ssh").mkdir(parents=True)
        (d / "home" / ".ssh" / "authorized_keys").write_text(authorized)
        host = generate("root@test-vm")
        (d / "hostkey").write_text(host.private_openssh)
        (d / "hostkey").chmod(0o600)
        port = _free_port()
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/hostkey\n"
            f"PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/home/.ssh/authorized_keys\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"SetEnv HOME={d}/home\n"
        )
        with known_hosts.open("a") as fh:
            fh.write(f"[127.0.0.1]:{port} {' '.join(host.public_openssh.split()[:2])}\n")
        env = dict(os.environ)
        if os.environ.get("KALLIKRATIS_TEST_SSHD_LIBS"):
            env["LD_LIBRARY_PATH"] = os.environ["KALLIKRATIS_TEST_SSHD_LIBS"]
        script = (
            f"mount --bind {passwd} /etc/passwd && mount -t tmpfs -o size=1m tmpfs /run"
            f" && mkdir -m 755 /run/sshd && exec {SSHD} -D -e -f {d}/sshd_config"
        )
        log = (d / "sshd.log").open("wb")
        procs.append(
            subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return port
            time.sleep(0.05)
        raise AssertionError((d / "sshd.log").read_text())

    yield start, known_hosts
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def _target(state: StateDir, known_hosts: Path, port: int, key: Path | None = None) -> SshTarget:
    return SshTarget("root", "127.0.0.1", key or state.client_key, known_hosts, port=port)


def test_rotate_moves_a_vm_to_the_new_key_and_keeps_the_old_for_an_unreachable_one(
    sshd: tuple[Sshd, Path], state_dir: Path, vault_password: Path
) -> None:
    start, known_hosts = sshd
    state = StateDir(state_dir)
    old_pub = fixed_client_public_key()
    port = start(old_pub + "\n")
    closed = _free_port()  # nothing listens there: an unreachable VM
    keys = KeyStore(state_dir, "crete")
    old_private = state.client_key.read_bytes()
    assert login_works(_target(state, known_hosts, port))

    targets = {
        "hersonissos": _target(state, known_hosts, port),
        "minoa-pediada": _target(state, known_hosts, closed),
    }
    out = {r.slug: r for r in rotation.rotate(keys, "crete", targets, sorted(targets))}

    assert out["hersonissos"].result == "rotated", out["hersonissos"].detail
    assert out["minoa-pediada"].result == "failed"
    assert "keeps the old" in out["minoa-pediada"].detail
    new_pub = state.client_key.with_suffix(".pub").read_text().strip()
    assert new_pub.split()[1] != old_pub.split()[1], "no new key"
    # the old private key is kept for the VM that still trusts only it
    assert state.previous_client_key.read_bytes() == old_private
    assert rotation.Rotation(keys, "crete").pending() == {"crete": ["minoa-pediada"]}
    # the VM: the new key logs in, the old one no longer does; authorized_keys has the new only
    assert login_works(_target(state, known_hosts, port, state.client_key))
    assert not login_works(_target(state, known_hosts, port, state.previous_client_key))
    authorized = (state_dir.parent / "vm0" / "home" / ".ssh" / "authorized_keys").read_text()
    assert [line.split()[1] for line in authorized.splitlines()] == [new_pub.split()[1]]

    # a second run finishes the pending rotation: no third key, the rotated VM unchanged
    minoa_port = start(old_pub + "\n")  # minoa-pediada is back
    again = {
        r.slug: r.result
        for r in rotation.rotate(
            keys,
            "crete",
            {
                "hersonissos": _target(state, known_hosts, port),
                "minoa-pediada": _target(state, known_hosts, minoa_port),
            },
            ["hersonissos", "minoa-pediada"],
        )
    }
    assert again == {"hersonissos": "unchanged", "minoa-pediada": "rotated"}
    assert state.client_key.with_suffix(".pub").read_text().strip() == new_pub
    assert not state.previous_client_key.exists(), "every VM rotated: the old key goes"
    assert not state.rotation.exists()


def test_rotation_leaves_retired_vms_unchanged_and_new_seeds_carry_the_new_key(
    test_fleet: model.Fleet, make_engine: Callable[[model.Fleet], Engine]
) -> None:
    engine = make_engine(test_fleet)
    ups = engine.up(test_fleet.municipalities, lambda _s, _p: None, wait=False)
    assert {r.result for r in ups} == {"created"}
    for m in test_fleet.municipalities:
        seedcustody.retire(engine, m)
    assert rotation.Rotation(engine.keys, test_fleet.name).start()
    new_pub = engine.keys.ensure_client_key()
    assert new_pub != fixed_client_public_key()
    assert {it.action for it in engine.plan(test_fleet.municipalities)} == {"unchanged"}
    again = engine.up(test_fleet.municipalities, lambda _s, _p: None, wait=False)
    assert {r.result for r in again} == {"unchanged"}
    # the engine offers the old key too while the rotation is pending
    target = engine.target(test_fleet.municipalities[0])
    assert target.more_identities == (engine.keys.state.previous_client_key,)
    # a VM created now boots with the new key
    from kallikratis.documents import VmKeys, compose

    m = test_fleet.municipalities[0]
    pair = engine.keys.host_key(m.slug, create=False)
    assert pair is not None
    docs = compose(test_fleet, m, VmKeys(pair, new_pub), "v1")
    assert new_pub in docs.seed.user_data


def test_cli_dry_run_names_what_would_rotate_and_changes_nothing(
    test_fleet: model.Fleet,
    make_engine: Callable[[model.Fleet], Engine],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from click.testing import CliRunner
    from kallikratis.commands.common import Context
    from kallikratis.commands.keys import rotate

    engine = make_engine(test_fleet)
    engine.up(test_fleet.select(("hersonissos",)), lambda _s, _p: None, wait=False)
    before = StateDir(state_dir).client_key.read_bytes()
    ctx = Context(test_fleet.inventory)
    ctx._fleet, ctx._engine = test_fleet, engine  # the same test-driver connection
    done = CliRunner().invoke(rotate, ["--all", "--dry-run", "--json"], obj=ctx)
    assert done.exit_code == 0, done.output
    got = {r["slug"]: r["result"] for r in json.loads(done.output)["results"]}
    assert got == {
        "archanes-asterousia": "absent",
        "minoa-pediada": "absent",
        "hersonissos": "would rotate",
    }
    assert StateDir(state_dir).client_key.read_bytes() == before
    assert not StateDir(state_dir).previous_client_key.exists()


def test_every_ssh_path_offers_the_old_key_while_a_rotation_is_pending(
    test_fleet: model.Fleet, state_dir: Path, vault_password: Path
) -> None:
    from kallikratis import stackvars, verify

    keys = KeyStore(state_dir, test_fleet.name, test_fleet.inventory)
    m = test_fleet.get("hersonissos")
    before = stackvars.municipality_vars(test_fleet, m, state_dir)["ansible_ssh_common_args"]
    assert "id_ed25519.old" not in before
    assert rotation.Rotation(keys, test_fleet.name).start()
    old = StateDir(state_dir).previous_client_key
    args = stackvars.municipality_vars(test_fleet, m, state_dir)["ansible_ssh_common_args"]
    assert f"-o IdentityFile={old}" in args
    config = verify.write_ssh_config(test_fleet, state_dir).read_text()
    assert f"  IdentityFile {old}" in config.splitlines()
    assert not rotation.Rotation(keys, test_fleet.name).start(), "pending: no third key"

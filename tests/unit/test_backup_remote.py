"""The off-site second copy (``backup_remote``): the two legs of a backup on the VM, the
``partial`` outcome, the authorized_keys line the remote's operator installs, and that line
at work: real borg through a real sshd on 127.0.0.1 with the forced command, proving the
VM's key can add archives to its own repository and nothing else.

The create script runs for real against this machine's borgmatic (Debian bookworm's 1.7;
the VMs run trixie's newer one, which keeps the same JSON shape: a list with one result per
repository of the configuration file).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kallikratis import backupmetrics, backupremote, backups, model
from kallikratis.errors import KallikratisError
from support import DATA

BORG_DATA = DATA / "borg"
CREATED = (BORG_DATA / "borgmatic-create.json").read_text()
PASSPHRASE = "unit-test-Passphrase-0123456789"
BORG = shutil.which("borg")
BORGMATIC = shutil.which("borgmatic")
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
SSH_KEYGEN = shutil.which("ssh-keygen")
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPbBUa67t5vBpRnBaIsZJ3gDVwGnLUPj6I4j1T2tGiGy"
REMOTE = model.BackupRemote(
    url="ssh://kk@offsite.example.org:2222/srv/kallikratis",
    user="kk",
    host="offsite.example.org",
    port=2222,
    path="/srv/kallikratis",
    host_key=ED25519,
)


def legs_output(control: str | None, offsite: str | None) -> str:
    """What the create script prints: each leg's JSON or its error lines (None = failed)."""
    out = ""
    for label, made in (("control", control), ("offsite", offsite)):
        if made is not None:
            out += made + f"\n#kk-leg {label} 0\n"
        else:
            out += f"\n#kk-leg {label} 1\n#kk-err Remote: ssh: connect to host 10.9.9.9 port "
            out += "2222: Connection refused\n#kk-err Connection closed by remote host.\n"
    return out


# --------------------------------------------------------------------------- parsing the legs


def test_both_legs_report_their_archive() -> None:
    legs = backupremote.parse_legs(legs_output(CREATED, CREATED))
    assert sorted(legs) == ["control", "offsite"]
    for leg in legs.values():
        assert leg.ok and backups.parse_create(leg.json).name == "hersonissos-2026-12-01T10:13:18"


def test_a_failed_leg_says_why_and_the_other_keeps_its_archive() -> None:
    legs = backupremote.parse_legs(legs_output(CREATED, None))
    assert legs["control"].ok
    assert not legs["offsite"].ok
    assert "Connection refused" in legs["offsite"].error
    assert backupremote.explain(legs["offsite"].error).startswith("the remote cannot be reached")


def test_recorded_two_legs_with_the_remote_failing() -> None:
    """Recorded from the create script with this machine's borgmatic 1.7 (the off-site
    repository's parent directory missing)."""
    text = (BORG_DATA / "create-two-legs-remote-failed.txt").read_text()
    legs = backupremote.parse_legs(text)
    made = backups.parse_create(legs["control"].json)
    assert backups.owns("hersonissos", made.name) and made.nfiles == 1
    assert "Error running actions for repository" in legs["offsite"].error
    assert "/tmp/kkoff/nodir/r2" in legs["offsite"].error


def test_borgmatics_bare_json_is_controls_leg() -> None:
    legs = backupremote.parse_legs(CREATED)
    assert list(legs) == ["control"] and legs["control"].ok


@pytest.mark.parametrize(
    ("said", "start"),
    [
        ("Host key verification failed.", "the remote's SSH host key is not the one pinned"),
        ("kk@offsite: Permission denied (publickey).", "the remote does not accept this VM's"),
        ("something else entirely", "something else entirely"),
    ],
)
def test_remote_failures_in_the_sysadmins_terms(said: str, start: str) -> None:
    assert backupremote.explain(said).startswith(start)


def test_a_malformed_leg_line_is_an_error() -> None:
    with pytest.raises(KallikratisError):
        backupremote.parse_legs("#kk-leg control\n")


# --------------------------------------------------------------------------- the outcome


class VM:
    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.scripts: list[str] = []

    def run(self, script: str, timeout: float = 300.0, **_: object) -> str:
        self.scripts.append(script)
        return self.reply


class Control:
    """control's store: prepare and prune answer like a healthy store."""

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, script: str, timeout: float = 300.0, **_: object) -> str:
        self.scripts.append(script)
        if " prepare " in script:
            return '{"slug": "hersonissos", "lock": "none", "holders": []}\n'
        return ""


def _municipality(remote: model.BackupRemote | None) -> model.Municipality:
    import ipaddress

    return model.Municipality(
        slug="hersonissos",
        vm_name="crete-hersonissos",
        display_name="Δήμος Χερσονήσου",
        domain="hersonissos.example.org",
        profile=model.Profile("small", 1, 1024, 10),
        modules=("portal",),
        ip=ipaddress.IPv4Address("10.42.0.10"),
        mac="52:54:00:00:00:10",
        hypervisor="hv01",
        backup_remote=remote,
    )


def _backup(reply: str, remote: model.BackupRemote | None) -> tuple[backups.Outcome, VM, Control]:
    vm, control = VM(reply), Control()
    store = backups.Store(control, lambda s: PASSPHRASE)  # type: ignore[arg-type]
    return backups.backup_one(_municipality(remote), vm, store), vm, control  # type: ignore[arg-type]


def test_both_copies_made_is_ok_and_names_both_archives() -> None:
    o, vm, control = _backup(legs_output(CREATED, CREATED), REMOTE)
    assert o.result == "ok" and o.remote == "ok"
    assert o.archive is not None and o.remote_archive is not None
    assert "kk_leg offsite /etc/borgmatic/offsite.yaml" in vm.scripts[0]
    assert any("prune" in s for s in control.scripts)  # control's repository pruned
    assert backups.verdict([o]) == ""


def test_remote_down_is_partial_control_archive_kept_exit_5() -> None:
    o, _, control = _backup(legs_output(CREATED, None), REMOTE)
    assert o.result == "partial"
    assert o.archive is not None and o.archive.name == "hersonissos-2026-12-01T10:13:18"
    assert o.remote == "failed" and o.remote_archive is None
    assert o.detail.startswith("remote failed: the remote cannot be reached")
    assert any("prune" in s for s in control.scripts)  # control's leg went all the way
    problem = backups.verdict([o])
    assert "the off-site copy failed on: hersonissos (control's archive was made)" in problem
    assert backups.BackupError(problem).exit_code == 5


def test_control_failed_is_failed_even_when_the_remote_got_it() -> None:
    o, _, control = _backup(legs_output(None, CREATED), REMOTE)
    assert o.result == "failed" and o.archive is None
    assert o.remote == "ok" and o.remote_archive is not None
    assert not any("prune" in s for s in control.scripts)
    assert backups.verdict([o]).startswith("backup failed on: hersonissos")


def test_without_a_remote_only_controls_leg_runs() -> None:
    o, vm, _ = _backup(legs_output(CREATED, None).split("\n#kk-leg offsite")[0] + "\n", None)
    assert o.result == "ok" and o.remote == "" and o.remote_archive is None
    assert "offsite" not in vm.scripts[0]


# --------------------------------------------------------------------------- remote-keys


def test_authorized_keys_line_forces_append_only_on_its_own_repository() -> None:
    line = backupremote.authorized_keys_line(REMOTE, "hersonissos", ED25519 + " comment")
    assert line == (
        'restrict,command="borg serve --append-only --restrict-to-repository '
        f'/srv/kallikratis/hersonissos" {ED25519} kallikratis-backup@hersonissos'
    )
    with pytest.raises(KallikratisError):
        backupremote.authorized_keys_line(REMOTE, "hersonissos", "-----BEGIN OPENSSH PRIVATE KEY")


def test_remote_keys_only_for_municipalities_with_a_remote() -> None:
    with_remote, without = _municipality(REMOTE), _municipality(None)
    keys = backupremote.remote_keys([with_remote], {"hersonissos": ED25519})
    assert [k.repository for k in keys] == [
        "ssh://kk@offsite.example.org:2222/srv/kallikratis/hersonissos"
    ]
    assert backupremote.remote_keys([without], {"hersonissos": ED25519}) == []
    [missing] = backupremote.remote_keys([with_remote], {})
    assert missing.authorized_keys == ""


# --------------------------------------------------------------------------- real borgmatic


@pytest.fixture
def borgmatic_bin(tmp_path: Path) -> Path:
    """borgmatic on PATH, without syslog (this machine has no /dev/log; the VMs have)."""
    # installed by scripts/lab install (scripts/system-packages.txt): missing is a failure
    assert BORGMATIC and BORG, "install the Debian packages borgmatic and borgbackup"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "borgmatic"
    wrapper.write_text(f'#!/bin/sh\nexec {BORGMATIC} --syslog-verbosity -1 "$@"\n')
    wrapper.chmod(0o755)
    return bindir


def _config_17(path: Path, source: Path, repository: Path, passfile: Path) -> Path:
    """A borgmatic 1.7 configuration (sectioned; the VMs' newer one reads the flat form)."""
    path.write_text(
        "location:\n"
        f"  source_directories: [{source}]\n"
        f"  repositories: [{repository}]\n"
        "storage:\n"
        "  archive_name_format: 'hersonissos-{now:%Y-%m-%dT%H:%M:%S}'\n"
        f"  encryption_passcommand: cat {passfile}\n"
    )
    return path


def test_the_create_script_with_real_borgmatic_two_legs_then_remote_failing(
    tmp_path: Path, borgmatic_bin: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "post.txt").write_text("Ανακοίνωση\n")
    passfile = tmp_path / "passphrase"
    passfile.write_text(PASSPHRASE + "\n")
    c1 = _config_17(tmp_path / "c1.yaml", source, tmp_path / "control", passfile)
    c2 = _config_17(tmp_path / "c2.yaml", source, tmp_path / "remote", passfile)
    env = {**os.environ, "PATH": f"{borgmatic_bin}:{os.environ['PATH']}", "HOME": str(tmp_path)}

    def run(offsite: Path) -> dict[str, backupremote.Leg]:
        script = backupremote.create_script(
            "hersonissos",
            True,
            encryption="repokey-blake2",
            control_config=str(c1),
            offsite_config=str(offsite),
        )
        done = subprocess.run(
            ["sh", "-euc", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return backupremote.parse_legs(done.stdout)

    legs = run(c2)  # both repositories made on first use, one archive each
    made = {label: backups.parse_create(leg.json) for label, leg in legs.items()}
    assert all(backups.owns("hersonissos", a.name) for a in made.values())
    assert made["control"].nfiles == made["offsite"].nfiles == 1
    # the remote's repository becomes unreachable: control's archive is still reported
    _config_17(c2, source, tmp_path / "gone" / "remote", passfile)
    legs = run(c2)
    assert legs["control"].ok and backups.parse_create(legs["control"].json).nfiles == 1
    assert not legs["offsite"].ok and str(tmp_path / "gone" / "remote") in legs["offsite"].error
    # a VM not deployed since backup_remote was set: says so
    legs = run(tmp_path / "missing.yaml")
    assert legs["control"].ok and "kallikratis deploy hersonissos" in legs["offsite"].error


# --------------------------------------------------------------------------- real sshd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An sshd on 127.0.0.1 with its own host key; authorized_keys written by the test."""
    assert SSHD and SSH_KEYGEN and BORG, "install openssh-server, openssh-client and borgbackup"
    assert os.getuid() == 0, "the unit tests run as root (sshd's privilege separation needs it)"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # what the package's tmpfiles makes
    root = tmp_path / "sshd"
    root.mkdir()
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", root / "host"], check=True)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'pid'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\n"
    )
    (root / "authorized_keys").write_text("")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        yield port, root
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _segments(repo: Path) -> dict[str, int]:
    return {str(p.relative_to(repo)): p.stat().st_size for p in (repo / "data").rglob("*")}


def test_remote_keys_line_at_work_append_only_own_repository_only(
    tmp_path: Path, sshd: tuple[int, Path]
) -> None:
    port, root = sshd
    user = pwd.getpwuid(os.getuid()).pw_name
    base = tmp_path / "offsite"
    base.mkdir()
    remote = model.BackupRemote(
        url=f"ssh://{user}@127.0.0.1:{port}{base}",
        user=user,
        host="127.0.0.1",
        port=port,
        path=str(base),
        host_key=" ".join((root / "host.pub").read_text().split()[:2]),
    )
    client = tmp_path / "vm-key"
    subprocess.run([SSH_KEYGEN or "", "-q", "-t", "ed25519", "-N", "", "-f", client], check=True)
    public = (tmp_path / "vm-key.pub").read_text().strip()
    [key] = backupremote.remote_keys([_municipality(remote)], {"hersonissos": public})
    (root / "authorized_keys").write_text(key.authorized_keys + "\n")
    known = tmp_path / "known_hosts"
    known.write_text(remote.known_hosts_line() + "\n")
    env = {
        **os.environ,
        "BORG_PASSPHRASE": PASSPHRASE,
        "BORG_BASE_DIR": str(tmp_path / "borg-home"),
        "BORG_RSH": f"ssh -i {client} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} "
        "-o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10",
    }

    def borg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BORG or "borg", *args], capture_output=True, text=True, env=env, timeout=120
        )

    repo = key.repository
    assert borg("init", "--encryption", "repokey-blake2", repo).returncode == 0
    source = tmp_path / "src"
    source.mkdir()
    (source / "upload.pdf").write_bytes(os.urandom(64 * 1024))
    made = borg("create", f"{repo}::hersonissos-2026-12-01T02:00:00", str(source))
    assert made.returncode == 0, made.stderr
    on_disk = base / "hersonissos"
    before = _segments(on_disk)
    # deleting the whole repository is refused; deleting an archive and compacting through
    # the forced command only appends a transaction: every byte written before stays
    gone = borg("delete", "--force", repo)
    assert gone.returncode != 0 and on_disk.is_dir()
    borg("delete", f"{repo}::hersonissos-2026-12-01T02:00:00")
    borg("compact", repo)
    after = _segments(on_disk)
    assert all(after.get(name) == size for name, size in before.items())
    # another municipality's repository, or any other path, is refused
    other = borg("init", "--encryption", "repokey-blake2", f"{remote.repository('minoa-pediada')}")
    assert other.returncode != 0 and "not allowed" in other.stderr
    assert not (base / "minoa-pediada").exists()
    # no shell: the forced command answers whatever is asked
    shell = subprocess.run(
        [*env["BORG_RSH"].split(), "-p", str(port), f"{user}@127.0.0.1", "id"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert "uid=" not in shell.stdout
    # a host key that is not the pinned one is refused; what ssh says is explained in the
    # sysadmin's terms (borg relays ssh's first line only, and not always: ssh asked directly)
    known.write_text(f"[127.0.0.1]:{port} {ED25519}\n")
    refused = borg("list", repo)
    assert refused.returncode != 0 and "hersonissos-" not in refused.stdout
    said = subprocess.run(
        [*env["BORG_RSH"].split(), "-p", str(port), f"{user}@127.0.0.1", "borg", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert said.returncode == 255
    assert backupremote.explain(said.stderr).startswith("the remote's SSH host key")


# --------------------------------------------------------------------------- metrics

PROMTOOL = shutil.which("promtool")


def _metrics(o: backups.Outcome) -> dict[str, str]:
    files = backupmetrics.textfiles(o, 1764583200.0)
    if PROMTOOL is not None:  # the node exporter's textfile format, as Prometheus reads it
        for text in files.values():
            done = subprocess.run(
                [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stdout + done.stderr
    return files


def test_a_partial_run_counts_for_control_not_for_the_remote() -> None:
    o, _, _ = _backup(legs_output(CREATED, None), REMOTE)
    files = _metrics(o)
    assert sorted(files) == [
        "kallikratis-backup-hersonissos.prom",
        "kallikratis-backup-run-hersonissos.prom",
    ]
    run = files["kallikratis-backup-run-hersonissos.prom"]
    assert 'kallikratis_backup_last_run_success{municipality="hersonissos"} 1' in run
    assert 'kallikratis_backup_last_run_remote_success{municipality="hersonissos"} 0' in run


def test_both_copies_write_the_remote_timestamp_and_no_remote_writes_none() -> None:
    o, _, _ = _backup(legs_output(CREATED, CREATED), REMOTE)
    remote = _metrics(o)["kallikratis-backup-remote-hersonissos.prom"]
    line = 'kallikratis_backup_remote_last_success_timestamp_seconds{municipality="hersonissos"}'
    assert f"{line} 1764583200" in remote
    plain, _, _ = _backup(CREATED, None)
    assert not any("remote" in text for text in _metrics(plain).values())


def test_borgs_own_words_for_an_unreachable_remote_are_explained() -> None:
    # as borgmatic reported it on a real VM with the remote's sshd stopped (ssh's own line lost)
    said = (
        "Connection closed by remote host. Is borg working on the server? offsite: Error running"
        " actions for repository offsite: Command '('borg', 'info', '--lock-wait', '120',"
        " 'ssh://kk@10.77.0.1:37143/srv/offsite/hersonissos')' returned non-zero exit status 81."
    )
    assert backupremote.explain(said).startswith("the remote cannot be reached. borg said: ")
    refused = "Remote: Permission denied (publickey).\nConnection closed by remote host."
    assert backupremote.explain(refused).startswith("the remote does not accept this VM's")


def test_the_cause_survives_a_long_repository_path_through_the_leg_parser() -> None:
    # the e2e run: the cause is at the start of borgmatic's words and the stand-in's path is
    # long; a tail kept before explaining lost "Connection closed by remote host"
    path = "/tmp/pytest-of-root/pytest-175/" + "x" * 400 + "/offsite/hersonissos"
    out = (
        f"{CREATED}\n#kk-leg control 0\n\n#kk-leg offsite 81\n"
        "#kk-err Connection closed by remote host. Is borg working on the server?\n"
        "#kk-err offsite: Error running actions for repository offsite: Command "
        f"'('borg', 'info', '--lock-wait', '120', 'ssh://kk@10.77.0.1:50013{path}')' "
        "returned non-zero exit status 81.\n"
    )
    leg = backupremote.parse_legs(out)["offsite"]
    assert not leg.ok
    explained = backupremote.explain(leg.error)
    assert explained.startswith("the remote cannot be reached. borg said: "), explained
    assert len(explained) < 420

"""control's kallikratis-backupstore (roles/backupstore) against real borg repositories on this
machine: the weekly check and its recorded result, a stale lock broken before a backup (and a
live one left alone), a `borg create` killed with SIGKILL, a full backup volume (a tiny tmpfs),
and the removal of a destroyed municipality's repository after the retention.

Each fault test ends the same way: the next backup succeeds, `borg check` is clean, and no
earlier archive is lost. The tool runs as a subprocess exactly as the timers and the
controller run it (here as root, with the store in tmp_path).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kallikratis import backups, backupstore, paths

TOOL = paths.PROJECT_ROOT / "roles/backupstore/files/usr/local/sbin/kallikratis-backupstore"
BORG = shutil.which("borg")
PASSPHRASE = "unit-test-Passphrase-0123456789"
SLUG = "hersonissos"

pytestmark = pytest.mark.skipif(
    BORG is None or os.geteuid() != 0, reason="needs borg (Debian: borgbackup) and root"
)


def _module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("kallikratis_backupstore_tool", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Store:
    """A store directory with the tool's state and textfile directories beside it."""

    def __init__(self, root: Path, store: Path | None = None) -> None:
        self.dir = store or root / "srv-backups"
        self.state = root / "state"
        self.textfile = root / "textfile"
        self.src = root / "src"
        self.home = root / "borg-home"  # borg's config and cache, off the (maybe full) volume
        for d in (self.dir, self.src, self.home):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def repo(self) -> Path:
        return self.dir / SLUG

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "BORG_PASSPHRASE_FD": "0",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def borg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [BORG or "borg", *args],
            input=PASSPHRASE + "\n",
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def init(self) -> None:
        self.borg("init", "--encryption", "repokey-blake2", str(self.repo))

    def create(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.borg("create", *args, f"{self.repo}::{name}", str(self.src), check=check)

    def archives(self) -> list[str]:
        out = self.borg("list", "--json", str(self.repo)).stdout
        return [a.name for a in backups.parse_archives(out)]

    def tool(self, *args: str, stdin: str = "") -> tuple[int, list[dict[str, Any]], str]:
        done = subprocess.run(
            [
                "python3",
                str(TOOL),
                "--store",
                str(self.dir),
                "--user",
                "root",
                "--state",
                str(self.state),
                "--textfile",
                str(self.textfile),
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done.returncode, backupstore.parse(done.stdout), done.stderr


def _write_random(path: Path, mib: int) -> None:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))


# --------------------------------------------------------------------------- the check


def test_the_weekly_check_records_a_pass_and_then_a_damaged_segment(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.init()
    (s.src / "notice.txt").write_text("Ανακοίνωση\n")
    s.create(f"{SLUG}-2026-11-01T02:00:00")
    code, [result], err = s.tool("check", "--all")
    assert code == 0, err
    assert result["slug"] == SLUG and result["passed"] is True
    assert result["scope"] == "repository"
    prom = (s.textfile / f"kallikratis-backup-check-{SLUG}.prom").read_text()
    assert f'kallikratis_backup_check_success{{municipality="{SLUG}"}} 1\n' in prom
    assert "kallikratis_backup_check_last_run_timestamp_seconds{" in prom
    _, [status], _ = s.tool("status", SLUG)
    recorded = backupstore.check_result(status["check"])
    assert recorded is not None and recorded.passed and recorded.time == result["time"]

    segments = [p for p in (s.repo / "data").rglob("[0-9]*") if p.is_file()]
    segment = max(segments, key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the largest segment
    segment.write_bytes(bytes(data))
    code, [result], _ = s.tool("check", SLUG)
    assert code == 1 and result["passed"] is False and "exit 1" in result["detail"]
    prom = (s.textfile / f"kallikratis-backup-check-{SLUG}.prom").read_text()
    assert f'kallikratis_backup_check_success{{municipality="{SLUG}"}} 0\n' in prom
    _, [status], _ = s.tool("status", SLUG)
    assert status["check"]["passed"] is False


def test_the_check_with_the_key_covers_the_archives_and_needs_the_right_passphrase(
    tmp_path: Path,
) -> None:
    s = Store(tmp_path)
    s.init()
    (s.src / "notice.txt").write_text("x\n")
    s.create(f"{SLUG}-2026-11-01T02:00:00")
    code, [result], err = s.tool("check", "--with-key", SLUG, stdin=PASSPHRASE + "\n")
    assert code == 0, err
    assert result["passed"] is True and result["scope"] == "repository+archives"
    code, [result], _ = s.tool("check", "--with-key", SLUG, stdin="wrong\n")
    assert code == 1 and result["passed"] is False
    assert "passphrase" in result["detail"].lower()


def test_a_missing_repository_fails_its_check(tmp_path: Path) -> None:
    s = Store(tmp_path)
    code, [result], _ = s.tool("check", "minoa-pediada")
    assert code == 1 and result["passed"] is False and "no repository" in result["detail"]


def test_a_hostile_slug_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path)
    code, out, err = s.tool("prepare", "../etc")
    assert code != 0 and out == [] and "not a municipality slug" in err


# --------------------------------------------------------------------------- stale locks


def _foreign_lock(repo: Path) -> None:
    """What a borg process killed with SIGKILL under another host id leaves behind."""
    holder = "old-control.example@123456789.4242-0"
    (repo / "lock.exclusive").mkdir()
    (repo / "lock.exclusive" / holder).touch()
    roster = {"exclusive": [["old-control.example@123456789", 4242, 0]], "shared": []}
    (repo / "lock.roster").write_text(json.dumps(roster))


def test_a_stale_lock_from_another_host_is_broken_before_the_next_backup(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.init()
    (s.src / "a.txt").write_text("a\n")
    s.create(f"{SLUG}-2026-11-01T02:00:00")
    _foreign_lock(s.repo)
    # borg itself never clears a lock named for another host: the backup would fail
    blocked = s.create(f"{SLUG}-2026-11-02T02:00:00", "--lock-wait", "1", check=False)
    assert blocked.returncode != 0 and "lock" in blocked.stderr.lower()
    assert any(w in blocked.stderr for w in ("Failed to create/acquire the lock", "LockTimeout"))
    assert "locked by another borg process" in backups.explain(blocked.stderr)

    code, [result], err = s.tool("prepare", SLUG)
    assert code == 0, err
    prepared = backupstore.Prepared(lock=result["lock"], holders=tuple(result["holders"]))
    assert prepared.lock == "broken"
    assert prepared.notes() == [
        "a stale lock in the repository (old-control.example@123456789 pid 4242, no such borg "
        "process) was broken"
    ]
    s.create(f"{SLUG}-2026-11-02T02:00:00", "--lock-wait", "1")
    s.borg("check", str(s.repo))
    assert s.archives() == [f"{SLUG}-2026-11-01T02:00:00", f"{SLUG}-2026-11-02T02:00:00"]
    _, [again], _ = s.tool("prepare", SLUG)
    assert again["lock"] == "none"


def test_a_lock_held_by_a_running_borg_is_left_alone(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.init()
    holder = subprocess.Popen(
        [BORG or "borg", "with-lock", str(s.repo), "sleep", "60"],
        env=s.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (s.repo / "lock.exclusive").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        code, [result], err = s.tool("prepare", SLUG)
        assert code == 0, err
        assert result["lock"] == "held" and f"pid {holder.pid}" in result["holders"][0]
        assert (s.repo / "lock.exclusive").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


# --------------------------------------------------------------------------- kill -9


def test_a_create_killed_with_sigkill_then_the_next_backup_succeeds(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.init()
    (s.src / "a.txt").write_text("first\n")
    s.create(f"{SLUG}-2026-11-01T02:00:00")
    _write_random(s.src / "big.bin", 96)
    proc = subprocess.Popen(
        [BORG or "borg", "create", "--compression", "none", "--checkpoint-interval", "1"]
        + [f"{s.repo}::{SLUG}-2026-11-02T02:00:00", str(s.src)],
        env=s.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(PASSPHRASE.encode() + b"\n")
    proc.stdin.close()
    data = s.repo / "data"
    before = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        written = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        if written > before + 16 * 1024 * 1024:  # midway through the data
            break
        time.sleep(0.05)
    assert proc.poll() is None, "borg create finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (s.repo / "lock.exclusive").exists()  # what the killed process left

    code, [prepared], err = s.tool("prepare", SLUG)
    assert code == 0, err
    assert prepared["lock"] == "broken"
    s.create(f"{SLUG}-2026-11-03T02:00:00")
    s.borg("check", str(s.repo))
    names = s.archives()
    assert names[0] == f"{SLUG}-2026-11-01T02:00:00"
    assert names[-1] == f"{SLUG}-2026-11-03T02:00:00"
    assert f"{SLUG}-2026-11-02T02:00:00" not in names  # the killed one never completed
    assert len(names) == 2


# --------------------------------------------------------------------------- through borg serve

#: what sshd runs for a municipality's key on control (roles/backupstore's authorized_keys):
#: the client's own command line is ignored
FORCED = """#!/bin/sh
cd "$KK_STORE" && exec borg serve --append-only --restrict-to-repository "$KK_STORE/{slug}"
"""


class Vm:
    """A municipality's borg client reaching control's forced `borg serve --append-only`
    (BORG_RSH stands in for ssh; the repository URL is the one roles/backup writes)."""

    def __init__(self, root: Path, store: Store) -> None:
        self.store = store
        self.home = root / "vm-home"
        self.home.mkdir()
        self.rsh = root / "fake-ssh"
        self.rsh.write_text(FORCED.format(slug=SLUG))
        self.rsh.chmod(0o755)
        self.url = f"ssh://borg@control/./{SLUG}"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "BORG_RSH": str(self.rsh),
            "KK_STORE": str(self.store.dir),
            "BORG_PASSPHRASE": PASSPHRASE,
        }

    def borg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [BORG or "borg", *args], env=self.env(), capture_output=True, text=True, timeout=300
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def create(self, name: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        src = str(self.store.src)
        return self.borg("create", "--compression", "none", f"{self.url}::{name}", src, check=check)

    def start_create(self, name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [BORG or "borg", "create", "--compression", "none", f"{self.url}::{name}"]
            + [str(self.store.src)],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _serve_pid(repo: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and os.fsencode(str(repo)) in argv:
                return int(proc.name)
        time.sleep(0.05)
    raise AssertionError("no borg serve started")


def _midway(s: Store, proc: subprocess.Popen[bytes]) -> None:
    data = s.repo / "data"
    before = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        written = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        if written > before + 16 * 1024 * 1024:
            return
        time.sleep(0.05)
    raise AssertionError("borg create finished (or stalled) before it could be killed")


@pytest.mark.parametrize("killed", ["the VM's borgmatic", "control's borg serve"])
def test_a_backup_killed_through_borg_serve_then_the_next_succeeds(
    tmp_path: Path, killed: str
) -> None:
    s = Store(tmp_path)
    vm = Vm(tmp_path, s)
    vm.borg("init", "--encryption", "repokey-blake2", vm.url)
    (s.src / "a.txt").write_text("first\n")
    vm.create(f"{SLUG}-2026-11-01T02:00:00")
    _write_random(s.src / "big.bin", 96)
    client = vm.start_create(f"{SLUG}-2026-11-02T02:00:00")
    try:
        serve = _serve_pid(s.repo, time.monotonic() + 30)
        _midway(s, client)
        os.kill(client.pid if killed == "the VM's borgmatic" else serve, signal.SIGKILL)
        client.wait(timeout=60)
    finally:
        client.kill()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{serve}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # a serve whose client died sees EOF and ends, releasing the lock

    code, [prepared], err = s.tool("prepare", SLUG)
    assert code == 0, err
    # the client's death lets serve release the lock; serve's own death leaves it behind
    assert prepared["lock"] == ("none" if killed == "the VM's borgmatic" else "broken")
    vm.create(f"{SLUG}-2026-11-03T02:00:00")
    s.borg("check", str(s.repo))
    assert s.archives() == [f"{SLUG}-2026-11-01T02:00:00", f"{SLUG}-2026-11-03T02:00:00"]
    code, [checked], _ = s.tool("check", SLUG)
    assert code == 0 and checked["passed"] is True


# --------------------------------------------------------------------------- a full volume


@pytest.fixture
def tiny_volume(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "kk-test-backups", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # a failure, not a skip: the suite runs as root (.ci/run), where a tmpfs always mounts
        pytest.fail(f"the full-volume test mounts a 24 MiB tmpfs (root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_volume_leaves_no_partial_archive_and_the_next_run_succeeds(
    tmp_path: Path, tiny_volume: Path
) -> None:
    s = Store(tmp_path, store=tiny_volume)
    vm = Vm(tmp_path, s)  # through control's `borg serve --append-only`, as in production
    vm.borg("init", "--encryption", "repokey-blake2", vm.url)
    (s.src / "a.txt").write_text("first\n")
    vm.create(f"{SLUG}-2026-11-01T02:00:00")
    filler = tiny_volume / "filler"
    _write_random(filler, shutil.disk_usage(tiny_volume).free // (1024 * 1024) - 4)
    _write_random(s.src / "big.bin", 10)  # incompressible: more than the 4 MiB left
    full = vm.create(f"{SLUG}-2026-11-02T02:00:00", check=False)
    assert full.returncode != 0
    explained = backups.explain(full.stderr)
    assert explained.startswith("control's backup volume is full: no archive was made"), full.stderr
    assert s.archives() == [f"{SLUG}-2026-11-01T02:00:00"]  # no partial archive

    filler.unlink()  # space freed
    code, [prepared], err = s.tool("prepare", SLUG)
    assert code == 0, err
    assert prepared["lock"] == "none"  # serve rolled back and let go
    vm.create(f"{SLUG}-2026-11-03T02:00:00")
    s.borg("check", str(s.repo))
    assert s.archives() == [f"{SLUG}-2026-11-01T02:00:00", f"{SLUG}-2026-11-03T02:00:00"]


# --------------------------------------------------------------------------- after destroy


def test_a_destroyed_municipalitys_repository_goes_only_after_the_retention(
    tmp_path: Path,
) -> None:
    s = Store(tmp_path)
    s.init()
    s.textfile.mkdir()
    for name in ("kallikratis-backup-", "kallikratis-backup-run-", "kallikratis-backup-check-"):
        (s.textfile / f"{name}{SLUG}.prom").write_text("# metrics\n")
    code, [first], err = s.tool("destroyed", SLUG)
    assert code == 0, err
    _, [second], _ = s.tool("destroyed", SLUG)
    assert second["destroyed"] == first["destroyed"]  # the first destroy counts
    # no more backups are due: BackupTooOld must not fire for it; the check goes on
    assert sorted(p.name for p in s.textfile.iterdir()) == [f"kallikratis-backup-check-{SLUG}.prom"]

    tool = _module()
    store = tool.Store(
        tool._parser().parse_args(
            ["--store", str(s.dir), "--user", "root", "--state", str(s.state)]
            + ["--textfile", str(s.textfile), "expire", "--days", "30"]
        )
    )
    destroyed_at = float(first["destroyed"])
    [kept] = tool.expire(store, 30, destroyed_at + 29.9 * 86400)
    assert kept["removed"] is False and kept["remove_after"] == round(destroyed_at + 30 * 86400)
    assert (s.repo / "config").is_file()
    [gone] = tool.expire(store, 30, destroyed_at + 30 * 86400 + 1)
    assert gone["removed"] is True
    assert not s.repo.exists() and list(s.textfile.iterdir()) == []
    assert tool.expire(store, 30, destroyed_at + 60 * 86400) == []  # nothing left to do


def test_a_good_backup_after_destroy_clears_the_record_a_failed_one_does_not(
    tmp_path: Path,
) -> None:
    s = Store(tmp_path)
    s.init()
    s.tool("destroyed", SLUG)
    _, [status], _ = s.tool("status", SLUG)
    assert isinstance(status["destroyed"], int)
    _, [prepared], _ = s.tool("prepare", SLUG)  # before the backup: the record stays
    _, [status], _ = s.tool("status", SLUG)
    assert "undestroyed" not in prepared and isinstance(status["destroyed"], int)
    # after a good archive, Store.prune's script on control runs `alive`
    assert backupstore.alive_line(SLUG) == (
        f"if [ -x {backupstore.TOOL} ]; then {backupstore.TOOL} alive {SLUG}; fi\n"
    )
    done = subprocess.run(
        ["python3", str(TOOL), "--store", str(s.dir), "--state", str(s.state), "alive", SLUG],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert backupstore.undestroyed("Pruning archive ...\n" + done.stdout, SLUG) is True
    _, [status], _ = s.tool("status", SLUG)
    assert status["destroyed"] is None
    _, [again], _ = s.tool("alive", SLUG)
    assert again == {"slug": SLUG, "undestroyed": False}
    code, out, _ = s.tool("expire", "--days", "1")
    assert code == 0 and out == []
    assert (s.repo / "config").is_file()


def test_expire_refuses_zero_days(tmp_path: Path) -> None:
    code, _, err = Store(tmp_path).tool("expire", "--days", "0")
    assert code != 0 and "at least 1" in err

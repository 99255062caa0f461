"""The backup service: borg's JSON as recorded from real runs, the scripts run on the VM and
on control, and a run over several municipalities with one unreachable VM.

The store script (prune, compact, info with the passphrase on standard input) also runs
against a real borg repository on this machine when borg is installed (Debian: borgbackup,
scripts/system-packages.txt).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from kallikratis import backups, backupstore, model
from kallikratis.errors import KallikratisError
from kallikratis.guest import GuestError
from support import DATA, InventoryCopy

BORG_DATA = DATA / "borg"
PASSPHRASE = "unit-test-Passphrase-0123456789"
BORG = shutil.which("borg")


# --------------------------------------------------------------------------- parsing


def test_create_json_as_borgmatic_prints_it() -> None:
    archive = backups.parse_create((BORG_DATA / "borgmatic-create.json").read_text())
    assert archive.name == "hersonissos-2026-12-01T10:13:18"
    assert archive.start == "2026-12-01T10:13:19.000000"
    assert (archive.original_size, archive.compressed_size) == (200616, 200743)
    assert (archive.deduplicated_size, archive.nfiles) == (558, 4)
    assert archive.seconds == pytest.approx(0.0214)


def test_info_json_lists_archives_oldest_first_with_their_stats() -> None:
    archives = backups.parse_archives((BORG_DATA / "borg-info.json").read_text())
    assert [a.name for a in archives] == [
        "hersonissos-2026-12-01T10:13:16",
        "hersonissos-2026-12-01T10:13:18",
    ]
    assert [a.deduplicated_size for a in archives] == [1114, 1115]
    assert all(a.original_size == 200013 for a in archives)


def test_list_json_gives_names_without_sizes() -> None:
    archives = backups.parse_archives((BORG_DATA / "borg-list.json").read_text())
    assert [a.name for a in archives] == [
        "hersonissos-2026-12-01T10:13:16",
        "hersonissos-2026-12-01T10:13:18",
    ]
    assert {a.original_size for a in archives} == {0}


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '[{"archive": {"stats": {}}}]', '{"archives": 3}', "[1, 2]"],
)
def test_unusable_output_is_an_error_not_a_crash(text: str) -> None:
    with pytest.raises(KallikratisError):
        if text.startswith("{"):
            backups.parse_archives(text)
        else:
            backups.parse_create(text)


def test_pruned_archives_from_prune_list() -> None:
    out = (
        "Keeping archive (rule: daily #1):        hersonissos-2026-12-01T10:13:18      "
        "Tue, 2026-12-01 10:13:19 [f948]\n"
        "Pruning archive (1/1):                   hersonissos-2026-12-01T10:13:16      "
        "Tue, 2026-12-01 10:13:16 [45d3]\n"
    )
    assert backups.parse_pruned(out) == ["hersonissos-2026-12-01T10:13:16"]


@pytest.mark.parametrize(
    ("slug", "archive", "owned"),
    [
        ("hersonissos", "hersonissos-2026-12-01T10:13:18", True),
        ("minoa-pediada", "minoa-pediada-2026-12-01T02:00:00", True),
        ("minoa", "minoa-pediada-2026-12-01T02:00:00", False),  # a prefix is not enough
        ("hersonissos", "minoa-pediada-2026-12-01T02:00:00", False),
        ("hersonissos", "hersonissos", False),
        ("hersonissos", "hersonissos-", False),
    ],
)
def test_an_archive_belongs_to_the_municipality_named_in_it(
    slug: str, archive: str, owned: bool
) -> None:
    assert backups.owns(slug, archive) is owned


# --------------------------------------------------------------------------- scripts


def test_create_script_makes_the_repository_if_missing_then_one_archive() -> None:
    script = backups.create_script("hersonissos")
    assert "--encryption repokey-blake2" in script
    assert 'borgmatic --config "$2" create --json' in script
    assert script.rstrip().endswith("kk_leg control /etc/borgmatic/config.yaml")
    assert "offsite" not in script  # no backup_remote: control's leg only
    assert "prune" not in script and "compact" not in script  # never from the VM


def test_prune_commands_follow_backup_keep_and_compact() -> None:
    commands, keyed = backups.prune_commands("hersonissos", {"daily": 7, "weekly": 4, "monthly": 6})
    prune, compact = commands
    assert prune[:3] == ["--lock-wait", "300", "prune"] and prune[-1] == "/srv/backups/hersonissos"
    assert {"--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6"} <= set(prune)
    assert compact == ["--lock-wait", "300", "compact", "/srv/backups/hersonissos"]
    assert keyed == [True, False]  # compact needs no key


def test_store_script_reads_the_passphrase_from_stdin_only() -> None:
    commands, keyed = backups.prune_commands("hersonissos", {"daily": 1})
    script = backups.store_script(commands, keyed=keyed)
    assert "BORG_PASSPHRASE_FD=0" in script
    assert "BORG_PASSPHRASE=" not in script and "BORG_PASSCOMMAND" not in script
    assert script.startswith("IFS= read -r kk_passphrase")
    assert "runuser -u borg -- env HOME=/srv/backups" in script


# --------------------------------------------------------------------------- runs


class FakeGuest:
    """One VM (or control) as the service sees it: scripts in, stdout out."""

    def __init__(self, reply: str | Callable[[str], str] = "", error: str = "") -> None:
        self.reply = reply
        self.error = error
        self.scripts: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    def run(
        self, script: str, timeout: float = 300.0, check: bool = True, stdin: str | None = None
    ) -> str:
        with self.lock:
            self.scripts.append((script, stdin))
        if self.error:
            raise GuestError(self.error)
        return self.reply(script) if callable(self.reply) else self.reply


def control_reply(prune: str) -> Callable[[str], str]:
    """control: the backup store tool's `prepare` (nothing to do), else borg's prune output."""

    def reply(script: str) -> str:
        if " prepare " in script:
            slug = script.split()[-1]
            return json.dumps({"slug": slug, "lock": "none", "holders": []})
        return prune

    return reply


def _fleet(inv: InventoryCopy) -> model.Fleet:
    inv.add_central()
    return inv.load()


def test_one_unreachable_vm_fails_alone(inv: InventoryCopy) -> None:
    fleet = _fleet(inv)
    created = (BORG_DATA / "borgmatic-create.json").read_text()
    guests = {m.slug: FakeGuest(created) for m in fleet.tenants if m.slug != "minoa-pediada"} | {
        "minoa-pediada": FakeGuest(error="10.42.0.11: SSH failed: connect: No route to host")
    }
    control = FakeGuest(
        control_reply("Pruning archive (1/1): hersonissos-2026-11-01T02:00:00  x [ab]\n")
    )
    asked: list[str] = []

    def passphrase_of(slug: str) -> str:
        asked.append(slug)
        return f"{PASSPHRASE}-{slug}"

    done: list[str] = []
    outcomes = backups.run(
        fleet.tenants,
        lambda m: guests[m.slug],  # type: ignore[arg-type,return-value]
        backups.Store(control, passphrase_of),  # type: ignore[arg-type]
        parallel=2,
        done=lambda o: done.append(o.slug),
    )
    by_slug = {o.slug: o for o in outcomes}
    assert [o.slug for o in outcomes] == [m.slug for m in fleet.tenants]
    assert sorted(done) == sorted(by_slug)
    assert by_slug["minoa-pediada"].result == "failed"
    assert "No route to host" in by_slug["minoa-pediada"].detail
    assert by_slug["minoa-pediada"].archive is None
    for slug in ("hersonissos", "archanes-asterousia"):
        assert by_slug[slug].result == "ok"
        assert by_slug[slug].archive is not None
        assert by_slug[slug].pruned == ["hersonissos-2026-11-01T02:00:00"]
    # prune ran on control for the two that were backed up, each with its own passphrase
    # on stdin and in no script
    assert sorted(asked) == ["archanes-asterousia", "hersonissos"]
    prepared = [s for s, _ in control.scripts if " prepare " in s]
    assert sorted(s.split()[-1] for s in prepared) == sorted(m.slug for m in fleet.tenants)
    for script, stdin in control.scripts:
        # prepare needs no key; prune gets its passphrase on stdin only
        assert stdin is None if script in prepared else stdin.startswith(PASSPHRASE)  # type: ignore[union-attr]
        assert PASSPHRASE not in script
    for guest in guests.values():
        assert all(PASSPHRASE not in s and stdin is None for s, stdin in guest.scripts)


def test_a_failed_prune_fails_the_municipality_but_names_the_archive(inv: InventoryCopy) -> None:
    fleet = _fleet(inv)
    herso = fleet.get("hersonissos")
    vm = FakeGuest((BORG_DATA / "borgmatic-create.json").read_text())
    control = FakeGuest(error="exit 2: Failed to create/acquire the lock")
    [o] = backups.run(
        [herso],
        lambda m: vm,  # type: ignore[arg-type,return-value]
        backups.Store(control, lambda s: PASSPHRASE),  # type: ignore[arg-type]
    )
    assert o.result == "failed"
    assert "hersonissos-2026-12-01T10:13:18 made, but pruning on control failed" in o.detail


def test_a_good_backup_clears_a_destroy_record_in_the_prune_session(inv: InventoryCopy) -> None:
    fleet = _fleet(inv)
    vm = FakeGuest((BORG_DATA / "borgmatic-create.json").read_text())
    cleared = json.dumps({"slug": "hersonissos", "undestroyed": True})
    control = FakeGuest(control_reply(f"Keeping archive: x\n{cleared}\n"))
    [o] = backups.run(
        [fleet.get("hersonissos")],
        lambda m: vm,  # type: ignore[arg-type,return-value]
        backups.Store(control, lambda s: PASSPHRASE),  # type: ignore[arg-type]
    )
    assert o.result == "ok" and o.notes == [backupstore.UNDESTROYED_NOTE]
    [prune] = [sc for sc, stdin in control.scripts if stdin is not None]
    assert prune.endswith(backupstore.alive_line("hersonissos"))
    assert prune.index("borg --lock-wait 300 prune") < prune.index(" alive hersonissos")


def test_a_full_backup_volume_is_named_as_such(inv: InventoryCopy) -> None:
    fleet = _fleet(inv)
    said = (
        "exit 1: Remote: OSError: [Errno 28] No space left on device\n"
        "summary: /etc/borgmatic/config.yaml: An error occurred"
    )
    vm = FakeGuest(error=f"10.42.0.10: {said}")
    control = FakeGuest(control_reply(""))
    [o] = backups.run(
        [fleet.get("hersonissos")],
        lambda m: vm,  # type: ignore[arg-type,return-value]
        backups.Store(control, lambda s: PASSPHRASE),  # type: ignore[arg-type]
    )
    assert o.result == "failed" and o.archive is None
    assert o.detail.startswith("backup: control's backup volume is full: no archive was made")
    assert "No space left on device" in o.detail
    assert backups.explain("exit 2: connection closed") == "exit 2: connection closed"


def test_a_control_without_the_store_tool_only_costs_a_note(inv: InventoryCopy) -> None:
    fleet = _fleet(inv)
    vm = FakeGuest((BORG_DATA / "borgmatic-create.json").read_text())

    def old_control(script: str) -> str:
        if " prepare " in script:
            raise GuestError(f"10.42.0.5: exit 3: {backupstore.MISSING}")
        return ""

    [o] = backups.run(
        [fleet.get("hersonissos")],
        lambda m: vm,  # type: ignore[arg-type,return-value]
        backups.Store(RaisingGuest(old_control), lambda s: PASSPHRASE),  # type: ignore[arg-type]
    )
    assert o.result == "ok"
    assert o.notes == [
        "the repository's lock was not checked on control: "
        f"10.42.0.5: exit 3: {backupstore.MISSING}"
    ]


class RaisingGuest:
    def __init__(self, answer: Callable[[str], str]) -> None:
        self.answer = answer

    def run(
        self, script: str, timeout: float = 300.0, check: bool = True, stdin: str | None = None
    ) -> str:
        return self.answer(script)


def test_central_vms_are_not_backed_up(inv: InventoryCopy) -> None:
    fleet = _fleet(inv)
    with pytest.raises(KallikratisError) as err:
        backups.tenants_only([fleet.get("control")])
    assert err.value.exit_code == 2


def test_no_control_vm_is_a_usage_error(inv: InventoryCopy) -> None:
    with pytest.raises(KallikratisError) as err:
        backups.require_control(inv.load())
    assert err.value.exit_code == 2 and "role control" in err.value.message


# --------------------------------------------------------------------------- real borg

needs_borg = pytest.mark.skipif(
    BORG is None or os.geteuid() != 0, reason="needs borg (Debian: borgbackup) and root"
)


def _borg(repo_home: Path, *args: str, stdin: str = PASSPHRASE + "\n") -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo_home), "BORG_PASSPHRASE_FD": "0"}
    done = subprocess.run(
        [BORG or "borg", *args], input=stdin, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def _store_run(script: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-euc", script], input=stdin, capture_output=True, text=True, timeout=120
    )


@needs_borg
def test_prune_and_info_on_a_real_repository_with_the_passphrase_on_stdin(
    tmp_path: Path,
) -> None:
    home = tmp_path / "store"
    repo = home / "hersonissos"
    src = tmp_path / "src"
    src.mkdir(parents=True)
    home.mkdir()
    (src / "notice.txt").write_text("Ανακοίνωση\n")
    _borg(home, "init", "--encryption", "repokey-blake2", str(repo))
    for stamp in ("2026-11-01T02:00:00", "2026-11-02T02:00:00", "2026-11-03T02:00:00"):
        _borg(home, "create", "--timestamp", stamp, f"{repo}::hersonissos-{stamp}", str(src))

    def store(
        commands: list[list[str]], keyed: list[bool], stdin: str
    ) -> subprocess.CompletedProcess[str]:
        script = backups.store_script(commands, keyed=keyed, user="root", home=str(home))
        assert PASSPHRASE not in script
        return _store_run(script, stdin)

    info = store([["info", "--json", "--last", "100", str(repo)]], [True], PASSPHRASE + "\n")
    assert info.returncode == 0, info.stderr
    assert len(backups.parse_archives(info.stdout)) == 3

    wrong = store([["info", "--json", str(repo)]], [True], "not-the-passphrase\n")
    assert wrong.returncode != 0 and "incorrect" in wrong.stderr

    prune = store(
        [
            ["--lock-wait", "300", "prune", "--list", "--keep-daily=2", str(repo)],
            ["--lock-wait", "300", "compact", str(repo)],
        ],
        [True, False],
        PASSPHRASE + "\n",
    )
    assert prune.returncode == 0, prune.stderr
    pruned = backups.parse_pruned(prune.stdout)  # what Guest.run returns
    assert pruned == ["hersonissos-2026-11-01T02:00:00"]
    left = backups.parse_archives(_borg(home, "list", "--json", str(repo)))
    assert [a.name for a in left] == [
        "hersonissos-2026-11-02T02:00:00",
        "hersonissos-2026-11-03T02:00:00",
    ]

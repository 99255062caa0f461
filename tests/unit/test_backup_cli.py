"""`kallikratis backup`, `backups` and `restore` through the click layer: exit codes, the
journal and the lock, the passphrase never in output, journal or scripts, and a restore
behind a real snapshot (libvirt's test driver) reverted when verify fails.

SSH into the VMs is replaced by :class:`FakeGuest` (scripts in, recorded output out).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import backups, backupstore, journal, model, restore, runlock
from kallikratis.cli import main_group
from kallikratis.commands import backup as backup_cmd
from kallikratis.commands import common, lifecycle
from kallikratis.errors import KallikratisError
from kallikratis.guest import GuestError
from kallikratis.keys import KeyStore
from kallikratis.provision import Engine
from kallikratis.secrets import ensure_secrets, read_secret
from support import DATA, InventoryCopy, systemd_verify_units

CREATED = (DATA / "borg" / "borgmatic-create.json").read_text()
INFO = (DATA / "borg" / "borg-info.json").read_text()


class FakeGuest:
    """Every VM by address: what it answers, what it was asked."""

    replies: dict[str, str] = {}
    down: set[str] = set()
    asked: list[tuple[str, str, str | None]] = []
    lock = threading.Lock()

    def __init__(self, target) -> None:  # type: ignore[no-untyped-def]
        self.host = target.host

    def run(
        self, script: str, timeout: float = 300.0, check: bool = True, stdin: str | None = None
    ) -> str:
        with self.lock:
            self.asked.append((self.host, script, stdin))
        if self.host in self.down:
            raise GuestError(f"{self.host}: SSH failed: connect to host: No route to host")
        if "test -d" in script:
            return "yes\n"
        if any(line.startswith(backupstore.TOOL) for line in script.splitlines()):
            return self.tool(script)
        return self.replies.get(self.host, "")

    #: what control's kallikratis-backupstore answers: subcommand -> extra JSON fields
    tool_answers: dict[str, dict[str, object]] = {}

    def tool(self, script: str) -> str:
        [line] = [ln for ln in script.splitlines() if ln.startswith(backupstore.TOOL)]
        words = line.split(" || ")[0].split()  # TOOL --store DIR --user USER COMMAND ... SLUG
        command, slug = words[5], words[-1]
        base: dict[str, object] = {
            "prepare": {"lock": "none", "holders": []},
            "status": {"repository": True, "check": None, "destroyed": None},
            "destroyed": {"destroyed": 1764583200},
            "check": {"time": 1764583200, "passed": True, "scope": "repository+archives"},
        }[command]
        return json.dumps({"slug": slug, **base, **self.tool_answers.get(command, {})}) + "\n"

    def maintenance(self, on: bool) -> None:
        self.run(f"maintenance {'on' if on else 'off'}")

    def set_clock(self, epoch: float) -> None:
        pass


@pytest.fixture
def fleet(inv: InventoryCopy, vault_password: Path, state_dir: Path, monkeypatch) -> model.Fleet:
    for lab_vault in inv.root.glob("host_vars/*/vault.yml"):
        lab_vault.unlink()
    inv.use_test_driver()
    inv.add_central()
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(state_dir))
    monkeypatch.setenv("KALLIKRATIS_INVENTORY", str(inv.root))
    monkeypatch.setattr(backup_cmd, "Guest", FakeGuest)
    FakeGuest.replies, FakeGuest.down, FakeGuest.asked = {}, set(), []
    FakeGuest.tool_answers = {}
    fleet = inv.load()
    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    for m in fleet.tenants:
        ensure_secrets(fleet, m, keys)
    return fleet


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main_group, list(args), catch_exceptions=True)


def _journal(state_dir: Path) -> list[journal.RunEntry]:
    return journal.Journal(state_dir).runs()


def _passphrases(fleet: model.Fleet, state_dir: Path) -> list[str]:
    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    return [read_secret(fleet, m.slug, keys, "vault_backup_passphrase") for m in fleet.tenants]


@pytest.mark.parametrize("command", ["backup", "backups", "restore"])
def test_help(command: str) -> None:
    result = _invoke(command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output and "Example" in result.output


def test_backup_without_control_exits_2_and_journals_nothing(
    inv: InventoryCopy, vault_password: Path, state_dir: Path, monkeypatch
) -> None:
    inv.use_test_driver()
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(state_dir))
    result = _invoke("-i", str(inv.root), "backup", "--all")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 2
    assert "role control" in result.exception.message
    assert _journal(state_dir) == []


def test_backup_of_control_is_refused(fleet: model.Fleet, state_dir: Path) -> None:
    result = _invoke("backup", "control")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 2
    assert FakeGuest.asked == []


def test_an_unreachable_vm_fails_alone_exit_5_journaled_without_passphrases(
    fleet: model.Fleet, state_dir: Path
) -> None:
    herso, minoa = fleet.get("hersonissos"), fleet.get("minoa-pediada")
    control = fleet.get("control")
    FakeGuest.replies = {str(m.ip): CREATED for m in fleet.tenants}
    FakeGuest.replies[str(control.ip)] = (
        "Pruning archive (1/1): hersonissos-2026-11-01T02:00:00 x\n"
    )
    FakeGuest.down = {str(minoa.ip)}
    result = _invoke("backup", "--all", "--json")
    assert isinstance(result.exception, backups.BackupError), result.output
    assert result.exception.exit_code == 5
    data = json.loads(result.output[result.output.index("{") :])
    got = {r["slug"]: r for r in data["municipalities"]}
    assert got["minoa-pediada"]["result"] == "failed"
    assert "No route to host" in got["minoa-pediada"]["detail"]
    assert got["hersonissos"]["result"] == "ok"
    assert got["hersonissos"]["archive"]["deduplicated_size"] == 558
    [run] = _journal(state_dir)
    assert run.command == "backup" and run.exit_code == 5
    assert {r.slug: r.result for r in run.results} == {
        "archanes-asterousia": "ok",
        "hersonissos": "ok",
        "minoa-pediada": "failed",
    }
    # metrics for control: a success file for the good ones, a run file for everyone
    metrics = [s for h, s, _ in FakeGuest.asked if h == str(control.ip) and ".prom" in s]
    assert len(metrics) == 1
    assert "kallikratis-backup-hersonissos.prom" in metrics[0]
    assert "kallikratis-backup-minoa-pediada.prom" not in metrics[0]
    assert 'kallikratis_backup_last_run_success{municipality="minoa-pediada"} 0' in metrics[0]
    # the passphrases went to control on stdin only: never in a script, the output or the journal
    secrets = _passphrases(fleet, state_dir)
    stdins = [stdin for h, _, stdin in FakeGuest.asked if stdin]
    assert len(stdins) == 2 and all(s.rstrip("\n") in secrets for s in stdins)
    db = sqlite3.connect(journal.Journal(state_dir).path).iterdump()
    dump = "\n".join(db)
    for secret in secrets:
        assert secret not in result.output
        assert all(secret not in script for _, script, _ in FakeGuest.asked)
        assert secret not in dump
    assert herso.slug in dump


def test_a_municipality_held_by_another_run_is_refused_exit_6(
    fleet: model.Fleet, state_dir: Path
) -> None:
    with runlock.hold(state_dir, fleet.name, ["hersonissos"], ["kallikratis", "patch"]):
        result = _invoke("backup", "hersonissos")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 6
    assert FakeGuest.asked == [] and _journal(state_dir) == []


def test_backups_lists_archives_read_on_control(fleet: model.Fleet) -> None:
    control = fleet.get("control")
    FakeGuest.replies = {str(control.ip): INFO}
    result = _invoke("backups", "hersonissos", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [a["name"] for a in data["archives"]] == [
        "hersonissos-2026-12-01T10:13:16",
        "hersonissos-2026-12-01T10:13:18",
    ]
    assert {h for h, _, _ in FakeGuest.asked} == {str(control.ip)}


def test_backups_shows_the_last_checks_result_and_the_destroy(fleet: model.Fleet) -> None:
    control = fleet.get("control")
    FakeGuest.replies = {str(control.ip): INFO}
    check = {"time": 1764475200, "passed": False, "scope": "repository", "seconds": 3.0}
    FakeGuest.tool_answers = {
        "status": {
            "check": check | {"detail": "exit 1: segment 7 damaged"},
            "destroyed": 1764561600,
        }
    }
    result = _invoke("backups", "hersonissos")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "last check: FAILED at 2025-11-30 04:00:00 UTC (repository, 3 s): exit 1: segment 7" in text
    )
    assert "destroyed at 2025-12-01 04:00 UTC" in text and "(90 days)" in text
    data = json.loads(_invoke("backups", "hersonissos", "--json").output)
    assert data["last_check"]["passed"] is False and data["destroyed"] == 1764561600


def test_backups_check_runs_now_with_the_key_on_stdin_and_is_journaled(
    fleet: model.Fleet, state_dir: Path
) -> None:
    control = fleet.get("control")
    FakeGuest.replies = {str(control.ip): INFO}
    result = _invoke("backups", "hersonissos", "--check", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["last_check"]["scope"] == "repository+archives"
    [(script, stdin)] = [(sc, si) for _h, sc, si in FakeGuest.asked if "check --with-key" in sc]
    [passphrase] = [p for p in _passphrases(fleet, state_dir) if stdin == p + "\n"]
    assert passphrase not in script and "check --with-key hersonissos ||" in script
    [run] = _journal(state_dir)
    assert run.command == "backup-check" and [r.result for r in run.results] == ["ok"]

    FakeGuest.tool_answers = {"check": {"passed": False, "detail": "exit 1: index mismatch"}}
    failed = _invoke("backups", "hersonissos", "--check")
    assert isinstance(failed.exception, backups.BackupError), failed.output
    assert failed.exception.exit_code == 5 and "index mismatch" in failed.exception.message
    assert [r.result for r in _journal(state_dir)[0].results] == ["failed"]  # newest first


def test_backup_says_it_broke_a_stale_lock(fleet: model.Fleet, state_dir: Path) -> None:
    herso = fleet.get("hersonissos")
    FakeGuest.replies = {str(herso.ip): CREATED}
    FakeGuest.tool_answers = {"prepare": {"lock": "broken", "holders": ["old@1 pid 4242"]}}
    result = _invoke("backup", "hersonissos", "--json")
    assert result.exit_code == 0, result.output
    [o] = json.loads(result.output[result.output.index("{") :])["municipalities"]
    assert o["result"] == "ok"
    assert o["notes"] == [
        "a stale lock in the repository (old@1 pid 4242, no such borg process) was broken"
    ]
    [run] = _journal(state_dir)
    assert "stale lock in the repository (old@1 pid 4242" in run.results[0].detail


def test_restore_of_another_municipalitys_archive_exits_2_before_anything(
    fleet: model.Fleet, state_dir: Path
) -> None:
    result = _invoke("restore", "hersonissos", "--archive", "minoa-pediada-2026-12-01T02:00:00")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 2
    assert "another municipality" in result.exception.message
    assert FakeGuest.asked == [] and _journal(state_dir) == []


def test_restore_without_yes_off_a_terminal_is_refused(fleet: model.Fleet) -> None:
    FakeGuest.replies = {str(fleet.get("control").ip): INFO}
    result = _invoke("restore", "hersonissos")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 2
    assert "--yes" in result.exception.message


# --------------------------------------------------------------------------- restore


class RestoreGuest:
    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on
        self.flag = False
        self.scripts: list[str] = []

    def run(self, script: str, timeout: float = 300.0, **_: object) -> str:
        self.scripts.append(script)
        if self.fail_on and self.fail_on in script:
            raise GuestError(f"exit 2: {self.fail_on} failed")
        return ""

    def maintenance(self, on: bool) -> None:
        self.flag = on

    def set_clock(self, epoch: float) -> None:
        pass


def _restore(
    make_engine: Callable[[model.Fleet], Engine],
    test_fleet: model.Fleet,
    guest: RestoreGuest,
    verify_ok: bool,
) -> tuple[restore.RestoreOutcome, Engine]:
    engine = make_engine(test_fleet)
    herso = engine.fleet.get("hersonissos")
    engine.up([herso], lambda _s, _p: None, wait=False)
    archive = backups.parse_archives(INFO)[-1]
    outcome = restore.restore(
        herso,
        archive,
        engine.backend(herso.hypervisor),
        guest,  # type: ignore[arg-type]
        lambda ms: {m.slug: (verify_ok, "" if verify_ok else "portal: HTTP 500") for m in ms},
        7,
    )
    return outcome, engine


def test_a_restore_runs_behind_a_snapshot_and_leaves_maintenance(
    make_engine: Callable[[model.Fleet], Engine], test_fleet: model.Fleet
) -> None:
    guest = RestoreGuest()
    outcome, engine = _restore(make_engine, test_fleet, guest, True)
    assert outcome.result == "restored" and not outcome.reverted, outcome.detail
    herso = engine.fleet.get("hersonissos")
    snaps = engine.backend(herso.hypervisor).list_snapshots(herso.vm_name)
    assert [s.name for s in snaps] == [outcome.snapshot]
    assert guest.flag is False
    [script] = guest.scripts
    assert "borgmatic extract --archive hersonissos-2026-12-01T10:13:18 --destination /" in script
    assert "--path etc/kallikratis --path var/lib/wordpress/wp-content/uploads" in script
    assert "--path var/lib/kolibri" in script and "borgmatic restore --archive" in script
    assert script.index("systemctl stop kolibri") < script.index("borgmatic extract")


def test_a_failed_verify_reverts_to_the_snapshot(
    make_engine: Callable[[model.Fleet], Engine], test_fleet: model.Fleet
) -> None:
    guest = RestoreGuest()
    outcome, _ = _restore(make_engine, test_fleet, guest, False)
    assert outcome.result == "failed" and outcome.reverted
    assert "verify: portal: HTTP 500" in outcome.detail
    assert "reverted to snapshot" in outcome.detail
    assert guest.flag is False


def test_a_failed_extract_reverts_too(
    make_engine: Callable[[model.Fleet], Engine], test_fleet: model.Fleet
) -> None:
    outcome, _ = _restore(make_engine, test_fleet, RestoreGuest(fail_on="borgmatic extract"), True)
    assert outcome.result == "failed" and outcome.reverted
    assert "borgmatic extract failed" in outcome.detail


def test_choose_takes_the_newest_or_the_named_archive() -> None:
    archives = backups.parse_archives(INFO)
    assert restore.choose("hersonissos", archives, None).name == archives[-1].name
    assert restore.choose("hersonissos", archives, archives[0].name) == archives[0]
    for wanted in ("hersonissos-2020-01-01T00:00:00", "minoa-pediada-2026-12-01T10:13:16"):
        with pytest.raises(KallikratisError) as err:
            restore.choose("hersonissos", archives, wanted)
        assert err.value.exit_code == 2
    with pytest.raises(KallikratisError, match="no archive yet"):
        restore.choose("hersonissos", [], None)


# --------------------------------------------------------------------------- schedule


def test_schedule_backup_units_pass_systemd_analyze_verify(
    inv: InventoryCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vault_password: Path
) -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package systemd"
    result = CliRunner().invoke(
        main_group,
        ["-i", str(inv.root), "schedule", "backup", "--on-calendar", "*-*-* 02:00", "--print"],
    )
    assert result.exit_code == 0, result.output
    files = {}
    for chunk in result.output.split("# /etc/systemd/system/")[1:]:
        name, _, text = chunk.partition("\n")
        files[name] = text
    assert sorted(files) == ["kallikratis-backup.service", "kallikratis-backup.timer"]
    service, timer = files["kallikratis-backup.service"], files["kallikratis-backup.timer"]
    assert f"-i {inv.root.resolve()} backup --all" in service
    assert f'Environment="KALLIKRATIS_VAULT_PASSWORD_FILE={vault_password}"' in service
    assert "TimeoutStartSec=6h" in service and "SuccessExitStatus" not in service
    assert "OnCalendar=*-*-* 02:00" in timer and "Unit=kallikratis-backup.service" in timer
    proc = systemd_verify_units(tmp_path / "units", files)
    assert proc.returncode == 0, proc.stderr
    assert "kallikratis-backup" not in proc.stderr, proc.stderr


def test_schedule_backup_refuses_a_bad_calendar(inv: InventoryCopy) -> None:
    result = CliRunner().invoke(
        main_group, ["-i", str(inv.root), "schedule", "backup", "--on-calendar", "whenever"]
    )
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 2


# --------------------------------------------------------------------------- destroy


def _engine_with_vms(
    make_engine: Callable[[model.Fleet], Engine], fleet: model.Fleet, inv: InventoryCopy
) -> tuple[Engine, common.Context]:
    engine = make_engine(fleet)
    engine.up([fleet.get("hersonissos")], lambda _s, _p: None, wait=False)
    ctx = common.Context(inv.root)
    ctx._engine = engine  # the same test-driver connection that holds the domain
    return engine, ctx


def _domains(engine: Engine) -> set[str]:
    be = engine.backend("hv01")
    return {d for d in ("crete-hersonissos",) if be.domain(d) is not None}


def test_destroy_takes_a_final_backup_first_and_names_it(
    fleet: model.Fleet, inv: InventoryCopy, make_engine, state_dir: Path
) -> None:
    engine, ctx = _engine_with_vms(make_engine, fleet, inv)
    herso = engine.fleet.get("hersonissos")
    assert _domains(engine) == {herso.vm_name}
    FakeGuest.replies = {str(herso.ip): CREATED}
    result = CliRunner().invoke(main_group.commands["destroy"], ["hersonissos", "--yes"], obj=ctx)
    assert result.exit_code == 0, result.output
    assert "final backup of hersonissos: hersonissos-2026-12-01T10:13:18" in result.output
    assert _domains(engine) == set()
    [run] = _journal(state_dir)
    details = [r.detail for r in run.results]
    [detail] = details
    assert detail.startswith("final backup hersonissos-2026-12-01T10:13:18;")
    # control records the destroy (its repository goes after backup_retention_after_destroy)
    control = str(engine.fleet.get("control").ip)
    recorded = [sc for h, sc, _ in FakeGuest.asked if h == control and " destroyed " in sc]
    assert len(recorded) == 1 and recorded[0].rstrip().endswith("destroyed hersonissos")
    assert "kept on control for 90 days" in result.output


def test_without_a_final_backup_nothing_is_destroyed(
    fleet: model.Fleet, inv: InventoryCopy, make_engine
) -> None:
    engine, ctx = _engine_with_vms(make_engine, fleet, inv)
    FakeGuest.down = {str(engine.fleet.get("hersonissos").ip)}
    result = CliRunner().invoke(main_group.commands["destroy"], ["hersonissos", "--yes"], obj=ctx)
    assert isinstance(result.exception, backups.BackupError), result.output
    assert result.exception.exit_code == 5 and "nothing was destroyed" in result.exception.message
    assert _domains(engine) == {"crete-hersonissos"}


@pytest.mark.parametrize(("typed", "destroyed"), [("hersonissos", True), ("minoa", False)])
def test_no_final_backup_is_asked_for_twice(
    fleet: model.Fleet, inv: InventoryCopy, make_engine, monkeypatch, typed: str, destroyed: bool
) -> None:
    engine, ctx = _engine_with_vms(make_engine, fleet, inv)
    monkeypatch.setattr(lifecycle.os, "isatty", lambda _fd: True)
    result = CliRunner().invoke(
        main_group.commands["destroy"],
        ["hersonissos", "--no-final-backup"],
        obj=ctx,
        input=f"y\n{typed}\n",
    )
    assert "No final backup" in result.output
    assert _domains(engine) == (set() if destroyed else {"crete-hersonissos"})
    assert result.exit_code == (0 if destroyed else 1), result.output
    # no backup was attempted; control only records the destroy (the repository is kept)
    control = str(engine.fleet.get("control").ip)
    expected = [(control, "destroyed hersonissos")] if destroyed else []
    assert [(h, " ".join(s.split()[-2:])) for h, s, _ in FakeGuest.asked] == expected

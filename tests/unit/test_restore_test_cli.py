"""`kallikratis restore-test`, `restore --to-new` and `schedule restore-test` through the click
layer: refusals (exit 2, nothing asked of control, nothing journaled), the lock, exit 5 when a
test fails, the journal, the metrics handed to control. The throwaway's libvirt side is real
(test driver); SSH is replaced by the FakeGuest of the backup CLI tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from kallikratis import ansible, backups, model, restorenew, restoretestmetrics, runlock
from kallikratis.cli import main_group
from kallikratis.commands import restoretest as restoretest_cmd
from kallikratis.commands import stack
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.provision import UpResult
from kallikratis.restorecontent import Content
from kallikratis.restoretest import RestoreTest, RestoreTestOutcome
from support import InventoryCopy, systemd_verify_units
from test_backup_cli import INFO, FakeGuest, _invoke, _journal
from test_backup_cli import fleet as fleet  # noqa: F401 - the fixture, shared

NO_ARCHIVES = json.dumps({"archives": []})
CONTENT = Content(posts={"1": "Ανακοίνωση"}, users={"admin"})


class Passing(RestoreTest):
    """The VM-side steps of a throwaway that restores well (libvirt stays real)."""

    wait = False

    def deploy(self) -> None:
        pass

    def restore(self, archive: str) -> None:
        self.expected = CONTENT

    def verify(self) -> tuple[bool, str]:
        return True, ""

    def actual(self) -> Content:
        return CONTENT


def _refused(result, text: str) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(result.exception, KallikratisError), result.output
    assert result.exception.exit_code == 2
    assert text in result.exception.message


@pytest.mark.parametrize("argv", [["restore-test"], ["restore"], ["schedule", "restore-test"]])
def test_help(argv: list[str]) -> None:
    result = _invoke(*argv, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output and "Example" in result.output


def test_restores_help_names_to_new() -> None:
    assert "--to-new NEWNAME" in _invoke("restore", "--help").output


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["restore-test", "hersonissos", "--all"], "NAMES or --all"),
        (["restore-test", "control"], "not backed up"),
        (["restore-test", "knossos"], "unknown municipality"),
        (["restore", "hersonissos", "--to-new", "hersonissos"], "restores in place"),
        (
            ["restore", "hersonissos", "--to-new", "archanes-asterousia"],
            "lacks module(s) education",
        ),
        (["restore", "hersonissos", "--to-new", "control"], "central VM"),
        (["restore", "hersonissos", "--to-new", "knossos"], "no municipality 'knossos'"),
    ],
)
def test_bad_input_exits_2_before_anything(
    fleet: model.Fleet,
    state_dir: Path,
    argv: list[str],
    text: str,  # noqa: F811
) -> None:
    result = _invoke(*argv)
    if isinstance(result.exception, UsageError) or result.exit_code != 2:
        _refused(result, text)
    else:  # click's own usage errors
        assert text in result.output
    assert FakeGuest.asked == [] and _journal(state_dir) == []


def test_without_control_exits_2(
    inv: InventoryCopy, vault_password: Path, state_dir: Path, monkeypatch
) -> None:
    inv.use_test_driver()
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(state_dir))
    _refused(_invoke("-i", str(inv.root), "restore-test", "--all"), "role control")
    assert _journal(state_dir) == []


def test_one_restore_test_at_a_time(fleet: model.Fleet, state_dir: Path) -> None:  # noqa: F811
    with runlock.hold(state_dir, fleet.name, [restoretest_cmd.LOCK_NAME], ["restore-test"]):
        result = _invoke("restore-test", "hersonissos")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 6
    assert _journal(state_dir) == []


def _own_archives(_store: backups.Store, slug: str) -> list[backups.Archive]:
    return [backups.Archive(f"{slug}-2026-12-01T02:00:04", "2026-12-01T02:00:04")]


def test_an_archive_named_for_another_municipality_is_not_tested(
    fleet: model.Fleet,  # noqa: F811
    monkeypatch,
) -> None:
    FakeGuest.replies = {str(fleet.get("control").ip): INFO}  # hersonissos' archives
    monkeypatch.setattr(restoretest_cmd, "RestoreTest", Passing)
    result = _invoke("restore-test", "archanes-asterousia", "--json")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 5
    [row] = json.loads(result.stdout)["results"]
    assert "is not an archive of archanes-asterousia" in row["detail"], row


def test_a_municipality_held_by_another_run_fails_alone(
    fleet: model.Fleet,  # noqa: F811
    state_dir: Path,
    monkeypatch,
) -> None:
    monkeypatch.setattr(backups.Store, "archives", _own_archives)
    monkeypatch.setattr(restoretest_cmd, "RestoreTest", Passing)
    with runlock.hold(state_dir, fleet.name, ["hersonissos"], ["kallikratis", "patch"]):
        result = _invoke("restore-test", "hersonissos", "archanes-asterousia", "--json")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 5
    rows = {r["slug"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["hersonissos"]["result"] == "failed" and "patch" in rows["hersonissos"]["detail"]
    assert rows["archanes-asterousia"]["result"] == "passed"


def _metrics(fleet: model.Fleet) -> str:
    control = str(fleet.get("control").ip)
    return "".join(s for host, s, _ in FakeGuest.asked if host == control and ".prom" in s)


def test_a_municipality_without_an_archive_fails_alone_exit_5(
    fleet: model.Fleet,
    state_dir: Path,
    monkeypatch,  # noqa: F811
) -> None:
    FakeGuest.replies = {str(fleet.get("control").ip): NO_ARCHIVES}
    monkeypatch.setattr(restoretest_cmd, "RestoreTest", Passing)
    result = _invoke("restore-test", "hersonissos", "--json")
    assert isinstance(result.exception, KallikratisError) and result.exception.exit_code == 5
    [row] = json.loads(result.stdout)["results"]
    assert row["result"] == "failed" and "no archive yet" in row["detail"]
    [run] = _journal(state_dir)
    assert (run.command, run.results[0].slug, run.results[0].result) == (
        "restore-test",
        "hersonissos",
        "failed",
    )
    text = _metrics(fleet)
    assert 'kallikratis_restore_test_last_success{municipality="hersonissos"} 0' in text
    assert "kallikratis-restore-test-hersonissos.prom" not in text  # the last success stays


def test_a_passed_test_is_journaled_and_handed_to_the_monitoring(
    fleet: model.Fleet,
    state_dir: Path,
    monkeypatch,  # noqa: F811
) -> None:
    FakeGuest.replies = {str(fleet.get("control").ip): INFO}
    monkeypatch.setattr(restoretest_cmd, "RestoreTest", Passing)
    result = _invoke("restore-test", "hersonissos", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["results"]
    assert row["result"] == "passed" and row["archive"].startswith("hersonissos-")
    assert row["expected"] == row["actual"] == CONTENT.counts()
    assert row["content"] == {"posts": {"1": "Ανακοίνωση"}, "comments": [], "uploads": {}}
    assert "removing the throwaway" in row["phases"]
    assert _journal(state_dir)[0].results[0].result == "passed"
    text = _metrics(fleet)
    assert 'kallikratis_restore_test_last_success{municipality="hersonissos"} 1' in text
    assert "kallikratis_restore_test_last_success_timestamp_seconds{" in text


def test_the_metrics_files_keep_the_last_success_apart() -> None:
    files = restoretestmetrics.textfiles(
        RestoreTestOutcome("hersonissos", result="passed"), 1764583200
    )
    assert sorted(files) == [
        "kallikratis-restore-test-hersonissos.prom",
        "kallikratis-restore-test-run-hersonissos.prom",
    ]
    assert (
        "kallikratis_restore_test_last_run_timestamp_seconds"
        in files["kallikratis-restore-test-run-hersonissos.prom"]
    )
    failed = restoretestmetrics.textfiles(RestoreTestOutcome("hersonissos"), 1764583200)
    assert list(failed) == ["kallikratis-restore-test-run-hersonissos.prom"]


def test_to_new_refuses_a_target_whose_vm_exists(test_fleet: model.Fleet) -> None:
    source, target = test_fleet.get("minoa-pediada"), test_fleet.get("archanes-asterousia")
    restorenew.check_target(source, target, exists=False)
    with pytest.raises(UsageError, match="already has a VM"):
        restorenew.check_target(source, target, exists=True)


def test_schedule_restore_test_is_weekly_and_valid(
    inv: InventoryCopy, tmp_path: Path, vault_password: Path
) -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package systemd"
    result = CliRunner().invoke(
        main_group, ["-i", str(inv.root), "schedule", "restore-test", "--print"]
    )
    assert result.exit_code == 0, result.output
    files = {}
    for chunk in result.output.split("# /etc/systemd/system/")[1:]:
        name, _, text = chunk.partition("\n")
        files[name] = text
    service = files["kallikratis-restore-test.service"]
    timer = files["kallikratis-restore-test.timer"]
    assert f"-i {inv.root.resolve()} restore-test --all" in service
    assert "TimeoutStartSec=12h" in service
    assert "OnCalendar=Sat *-*-* 05:00" in timer
    proc = systemd_verify_units(tmp_path / "units", files)
    assert proc.returncode == 0, proc.stderr


class _Target:
    """The new VM's answers to the content queries (what parse_actual reads)."""

    def __init__(self, posts: dict[str, str]) -> None:
        self.posts = posts

    def run(self, script: str, timeout: float = 300.0, **_: object) -> str:
        lines = [json.dumps({"id": k, "title": v}) for k, v in self.posts.items()]
        return "#posts\n" + "\n".join(lines) + "\n#users\n" + json.dumps({"login": "admin"}) + "\n"


class _Transplant:
    def __init__(self, target: _Target) -> None:
        self.archive = "hersonissos-2026-12-01T02:00:04"
        self.target = target
        self.moved: list[bool] = []

    def run(self, m: model.Municipality, moved: bool = False) -> Content:
        self.moved.append(moved)
        return CONTENT


@pytest.mark.parametrize(
    ("posts", "verified", "reapplied", "result", "detail", "called"),
    [
        ({"1": "Ανακοίνωση"}, True, True, "restored", "", ["reapply", "verify"]),
        (
            {"1": "Ανακοίνωση"},
            False,
            True,
            "failed",
            "verifying: verify: web: 502",
            ["reapply", "verify"],
        ),
        ({}, True, True, "failed", "content check: published posts missing", []),
        (
            {"1": "Ανακοίνωση"},
            True,
            False,
            "failed",
            "applying its own settings: the portal role failed",
            ["reapply"],
        ),
    ],
)
def test_to_new_restores_checks_reapplies_and_verifies_the_new_vm(
    test_fleet: model.Fleet,
    posts: dict[str, str],
    verified: bool,
    reapplied: bool,
    result: str,
    detail: str,
    called: list[str],
) -> None:
    new = test_fleet.get("archanes-asterousia")
    transplant = _Transplant(_Target(posts))
    phases: list[str] = []
    calls: list[str] = []

    def reapply() -> None:
        calls.append("reapply")
        if not reapplied:
            raise KallikratisError("the portal role failed (Portal set-up: exit 1)")

    def verify(ms: list[model.Municipality]) -> dict[str, tuple[bool, str]]:
        calls.append("verify")
        return {ms[0].slug: (verified, "web: 502")}

    outcome = restorenew.to_new(new, transplant, verify, reapply, phases.append)  # type: ignore[arg-type]
    assert (outcome.slug, outcome.result) == ("archanes-asterousia", result)
    assert outcome.detail.startswith(detail)
    assert transplant.moved == [True]  # WordPress' addresses become the new VM's
    assert phases[0] == "restoring files and databases"
    # the target's own settings go over the archive's after the content check (the set-up
    # adds sample posts where missing), before verify; nothing after a failed step
    assert calls == called


class _Record:
    """What bring_up journals (not looked at here)."""

    def result(self, *_args: object) -> None: ...

    def artifacts(self, *_args: object) -> None: ...


@pytest.mark.parametrize("as_json", [False, True])
def test_bring_up_keeps_standard_output_for_the_callers_json(
    test_fleet: model.Fleet, monkeypatch: pytest.MonkeyPatch, capsys, as_json: bool
) -> None:
    """`restore --to-new --json` brings NEWNAME up first: its up and deploy tables go to
    standard error then, or the JSON report would not be the only thing on standard output
    (found on real VMs)."""

    new = test_fleet.get("archanes-asterousia")
    hosts = {new.slug: ansible.HostOutcome(ok=3)}
    run = ansible.PlaybookRun("site.yml", 0, 1.0, Path("/runs/x/artifacts"), hosts, "linear")
    monkeypatch.setattr(stack, "prepare_stack", lambda *_a: None)
    monkeypatch.setattr(stack.siterun, "run_site", lambda *_a, **_k: run)
    engine = SimpleNamespace(
        up=lambda ms, _board: [UpResult(ms[0].slug, "created", seconds=1.0)],
        keys=None,
        state_dir=Path("/nonexistent"),
    )
    ctx = SimpleNamespace(engine=engine, fleet=test_fleet)
    stack.bring_up(ctx, new, _Record(), as_json)  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    tables = (err, out) if as_json else (out, err)
    assert "created" in tables[0] and "deploy (linear" in tables[0]
    assert "created" not in tables[1] and "deploy (linear" not in tables[1]

"""The click layer: exit codes, JSON output, refusals, help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis.cli import main_group
from kallikratis.commands import common
from kallikratis.errors import UsageError
from support import SLUGS, InventoryCopy

COMMANDS = [
    "validate",
    "plan",
    "up",
    "status",
    "ssh",
    "console",
    "destroy",
    "render",
    "image",
    "deploy",
    "verify",
    "onboard",
    "patch",
    "history",
    "schedule",
    "keys",
    "snapshots",
    "report",
    "backup",
    "backups",
    "restore",
    "restore-test",
    "hub",
]


@pytest.fixture
def test_inv(inv: InventoryCopy, vault_password: Path) -> InventoryCopy:
    inv.use_test_driver()
    return inv


def _kk(inv: InventoryCopy, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point `main` in a child process, for exit codes and stderr."""
    env = {**os.environ, "KALLIKRATIS_INVENTORY": str(inv.root), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from kallikratis.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _invoke(inv: InventoryCopy, *args: str):
    return CliRunner().invoke(main_group, ["-i", str(inv.root), *args], catch_exceptions=True)


def test_validate_bad_inventory_exits_2_naming_file_entry_field(inv: InventoryCopy) -> None:
    inv.set_host("hersonissos", ip="10.42.0.1")
    proc = _kk(inv, "validate", "--offline")
    assert proc.returncode == 2
    assert f"{inv.hosts}: hersonissos: ip:" in proc.stderr.replace("\n", "")


def test_validate_json_lists_problems(inv: InventoryCopy) -> None:
    inv.set_host("minoa-pediada", modules="portal")
    proc = _kk(inv, "validate", "--offline", "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["valid"] is False
    assert [(p["file"], p["entry"], p["field"]) for p in data["problems"]] == [
        (str(inv.hosts), "minoa-pediada", "modules")
    ]


def test_validate_offline_ok(inv: InventoryCopy) -> None:
    result = _invoke(inv, "validate", "--offline")
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output and "3 municipalities" in result.output


def test_validate_checks_capacity_online(test_inv: InventoryCopy) -> None:
    assert _invoke(test_inv, "validate").exit_code == 0
    test_inv.set_profile("small", vcpus=32)
    proc = _kk(test_inv, "validate")
    assert proc.returncode == 2
    assert "wants 32 vCPUs" in proc.stderr


def test_plan_and_status_json(test_inv: InventoryCopy) -> None:
    result = _invoke(test_inv, "plan", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert [(i["slug"], i["action"]) for i in plan["items"]] == [(s, "create") for s in SLUGS]
    assert plan["orphans"] == []
    result = _invoke(test_inv, "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["fleet"] == "crete"
    rows = {r["slug"]: r for r in status["municipalities"]}
    assert set(rows) == set(SLUGS)
    assert rows["hersonissos"]["display_name"] == "Δήμος Χερσονήσου"
    assert rows["hersonissos"]["state"] == "absent"


def test_up_json_creates(test_inv: InventoryCopy) -> None:
    result = _invoke(test_inv, "up", "--all", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert {r["slug"]: r["result"] for r in data["results"]} == dict.fromkeys(SLUGS, "created")


def test_destroy_without_yes_and_tty_refuses(test_inv: InventoryCopy) -> None:
    proc = _kk(test_inv, "destroy", "hersonissos")
    assert proc.returncode == 2
    assert "--yes" in proc.stderr
    result = _invoke(test_inv, "destroy", "--all")  # main_group leaves the mapping to main()
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2


def test_destroy_refusal_removes_nothing(test_inv: InventoryCopy, make_engine) -> None:
    engine = make_engine(test_inv.load())
    engine.up(engine.fleet.municipalities, lambda _s, _p: None, wait=False)
    keys = sorted(p.name for p in (engine.keys.dir / "host-keys").iterdir())
    runner = CliRunner()
    ctx = common.Context(test_inv.root)
    ctx._engine = engine  # the same test-driver connection that holds the domains
    result = runner.invoke(main_group.commands["destroy"], ["hersonissos"], obj=ctx)
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert _names(engine) == {m.vm_name for m in engine.fleet.municipalities}
    assert sorted(p.name for p in (engine.keys.dir / "host-keys").iterdir()) == keys


def _names(engine) -> set[str]:
    return {d.name for d in engine.backend("hv01").domains("crete")}


@pytest.mark.parametrize(
    "args",
    [
        ("render", "knossos"),
        ("plan", "knossos"),
        ("up", "knossos", "--no-wait"),
        ("destroy", "knossos", "--yes"),
        ("ssh", "knossos"),
        ("report", "knossos"),
    ],
    ids=lambda a: a[0],
)
def test_unknown_municipality_exits_2(test_inv: InventoryCopy, args: tuple[str, ...]) -> None:
    proc = _kk(test_inv, *args)
    assert proc.returncode == 2, proc.stderr
    assert "knossos" in proc.stderr


def test_no_inventory_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KALLIKRATIS_INVENTORY"}
    proc = subprocess.run(
        [sys.executable, "-c", "from kallikratis.cli import main; main()", "validate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "no inventory" in proc.stderr


@pytest.mark.parametrize("what", ["user-data", "domain", "meta-data", "network-config"])
def test_render_never_prints_a_private_key(test_inv: InventoryCopy, what: str) -> None:
    before = _invoke(test_inv, "render", "hersonissos", "--what", what)
    assert before.exit_code == 0, before.output
    assert "PRIVATE KEY" not in before.output
    up = _invoke(test_inv, "up", "hersonissos", "--no-wait")
    assert up.exit_code == 0, up.output
    state = Path(os.environ["KALLIKRATIS_STATE_DIR"])
    assert (state / "fleets" / "crete" / "host-keys" / "hersonissos.vault").exists()
    after = _invoke(test_inv, "render", "hersonissos", "--what", what)
    assert after.exit_code == 0, after.output
    assert "PRIVATE KEY" not in after.output
    if what == "user-data":
        assert "<redacted: host private key>" in after.output
        assert "ssh-ed25519 " in after.output


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(main_group, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_every_command_is_covered_by_the_help_test() -> None:
    assert sorted(main_group.commands) == sorted(COMMANDS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("patch",), "name the municipalities, or pass --all"),
        (("patch", "--all", "--batch", "0"), "--batch must be"),
        (("patch", "--all", "--max-fail", "lots"), "--max-fail must be"),
        (("patch", "nowhere"), "unknown municipality"),
    ],
)
def test_patch_bad_arguments_exit_2_before_any_change(
    test_inv: InventoryCopy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    message: str,
) -> None:
    state = tmp_path / "patch-state"
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(state))
    done = _kk(test_inv, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (state / "journal.sqlite").exists(), "a refused run is not journaled"

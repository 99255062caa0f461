"""A relative inventory path works for every command, and a playbook that did not start says
why in the CLI's own error (ansible-playbook's words, never a secret)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import ansible
from kallikratis.cli import main_group
from kallikratis.commands.common import Context
from kallikratis.commands.stack import raise_if_not_started
from kallikratis.errors import ProvisionError
from support import InventoryCopy

NOWHERE = "nowhere-0"  # a host no inventory has: ansible-playbook stops before any connection


def test_the_click_context_makes_a_relative_inventory_absolute(
    inv: InventoryCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(inv.root.parent)
    ctx = Context(Path(inv.root.name))
    assert ctx.inventory_path == inv.root
    assert ctx.fleet.inventory == inv.root
    monkeypatch.chdir(inv.root)
    assert Context(Path("../inventory/./hosts.yml")).inventory_path == inv.hosts


@pytest.mark.parametrize("how", ["option", "environment"])
def test_commands_see_the_absolute_inventory(
    inv: InventoryCopy, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.chdir(inv.root.parent)
    args = ["validate", "--offline"]
    env = {"KALLIKRATIS_INVENTORY": "inventory"} if how == "environment" else {}
    if how == "option":
        args = ["-i", "inventory", *args]
    result = CliRunner().invoke(main_group, args, env=env)
    assert result.exit_code == 0, result.output
    assert f"inventory {inv.root} is valid" in result.output


def test_the_runner_gets_an_absolute_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ansible.runner_arguments(
        "site.yml", Path("inventories/crete"), tmp_path / "run", ["hersonissos"], {}, False, None
    )
    assert args["inventory"] == str(tmp_path / "inventories" / "crete")
    assert args["limit"] == "hersonissos" and args["cmdline"] is None


def _run_without_hosts(
    inv: InventoryCopy, state_dir: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> ansible.PlaybookRun:
    """A real ansible-runner run of site.yml, the inventory given relative, limited to a host
    that no play of site.yml targets: it stops in seconds and contacts nothing."""
    monkeypatch.chdir(inv.root.parent)
    monkeypatch.setenv("KALLIKRATIS_ANSIBLE_STOCK", "1")
    return ansible.run_playbook("site.yml", Path(inv.root.name), limit=[host], state_dir=state_dir)


@pytest.fixture
def no_host_run(
    inv: InventoryCopy, state_dir: Path, vault_password: Path, monkeypatch: pytest.MonkeyPatch
) -> ansible.PlaybookRun:
    return _run_without_hosts(inv, state_dir, monkeypatch, NOWHERE)


def test_a_relative_inventory_reaches_ansible(
    inv: InventoryCopy, state_dir: Path, vault_password: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hv01 is in the inventory but no play targets it: the pattern matches (the inventory was
    read relative to the current directory, not to the runner's private data dir)."""
    run = _run_without_hosts(inv, state_dir, monkeypatch, "hv01")
    assert "Could not match supplied host pattern" not in run.not_started
    assert run.not_started == "skipping: no hosts matched"


def test_a_playbook_that_matched_no_host_says_why(no_host_run: ansible.PlaybookRun) -> None:
    run = no_host_run
    assert "Could not match supplied host pattern, ignoring: " + NOWHERE in run.not_started
    assert "leaves us with no hosts to target" in run.not_started
    [(task, message)] = run.hosts[NOWHERE].failures
    assert task == "(none)"
    assert message.startswith(f"ansible did not start on {NOWHERE}: {run.not_started}")
    assert str(run.artifacts.parent) in message


def test_the_cli_error_carries_the_reason(no_host_run: ansible.PlaybookRun) -> None:
    with pytest.raises(ProvisionError) as err:
        raise_if_not_started(no_host_run)
    assert err.value.exit_code == 5
    assert "Could not match supplied host pattern" in err.value.message
    assert str(no_host_run.artifacts.parent) in err.value.message


CAPTURED = """\
[WARNING]: Unable to parse /srv/kk/runs/x/inventories/crete as an inventory source
[WARNING]: No inventory was parsed, only implicit localhost is available
[WARNING]: Could not match supplied host pattern, ignoring: hersonissos
[ERROR]: Specified inventory, host pattern and/or --limit leaves us with no hosts to target.
vault_db_password: s3cr3t-value-123
PLAY [all] *********************************************************************
[ERROR]: failed with s3cr3t-value-123 in it
"""


def test_the_reason_is_extracted_from_captured_output_without_secrets() -> None:
    text = ansible.start_problem(CAPTURED, ["s3cr3t-value-123"])
    assert text.split("; ") == [
        "[WARNING]: Unable to parse /srv/kk/runs/x/inventories/crete as an inventory source",
        "[WARNING]: No inventory was parsed, only implicit localhost is available",
        "[WARNING]: Could not match supplied host pattern, ignoring: hersonissos",
        "[ERROR]: Specified inventory, host pattern and/or --limit leaves us with no hosts"
        " to target.",
        "[ERROR]: failed with <redacted> in it",
    ]
    assert "s3cr3t" not in text and "PLAY" not in text
    assert ansible.start_problem("PLAY [all]\nok: [hersonissos]\n") == ""


def test_a_run_that_started_needs_no_reason(tmp_path: Path) -> None:
    run = ansible.PlaybookRun("site.yml", 0, 1.0, tmp_path, {}, "linear")
    raise_if_not_started(run)  # nothing to say
    assert run.not_started == "" and os.path.isabs(run.artifacts)


def test_ansible_runner_keeps_host_key_checking_on(tmp_path: Path) -> None:
    """ansible-runner turns ANSIBLE_HOST_KEY_CHECKING off by default, which makes mitogen
    disable checking ahead of our pinned options: the environment we hand it must survive the
    runner's own preparation with checking on."""
    import ansible_runner

    env, _strategy = ansible.runner_environment(tmp_path / "state")
    args = ansible.runner_arguments(
        "site.yml", Path("inventories/crete"), tmp_path / "run", ["hersonissos"], env, False, None
    )
    config = ansible_runner.RunnerConfig(
        **{k: v for k, v in args.items() if k not in ("quiet", "extravars")}
    )
    config.prepare()
    assert config.env["ANSIBLE_HOST_KEY_CHECKING"] == "True"

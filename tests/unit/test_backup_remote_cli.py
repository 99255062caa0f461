"""The off-site copy through the click layer: `backup` with a remote that fails (partial,
exit 5, journaled, metrics), `backup remote-keys` (public keys only) and `backups --remote`
(read through the VM). SSH into the VMs is replaced by test_backup_cli's FakeGuest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from kallikratis import backups, journal, model
from kallikratis.cli import main_group
from kallikratis.commands import backup as backup_cmd
from kallikratis.errors import UsageError
from kallikratis.keys import KeyStore
from kallikratis.secrets import ensure_secrets, read_secret
from support import DATA, InventoryCopy
from test_backup_cli import FakeGuest

CREATED = (DATA / "borg" / "borgmatic-create.json").read_text()
INFO = (DATA / "borg" / "borg-info.json").read_text()
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPbBUa67t5vBpRnBaIsZJ3gDVwGnLUPj6I4j1T2tGiGy"
URL = "ssh://kk@offsite.example.org:2222/srv/kallikratis"
DOWN = (
    "\n#kk-leg offsite 1\n#kk-err Remote: ssh: connect to host offsite.example.org port 2222: "
    "Connection refused\n#kk-err Connection closed by remote host. Is borg working on the server?\n"
)


@pytest.fixture
def fleet(inv: InventoryCopy, vault_password: Path, state_dir: Path, monkeypatch) -> model.Fleet:
    for lab_vault in inv.root.glob("host_vars/*/vault.yml"):
        lab_vault.unlink()
    inv.use_test_driver()
    inv.add_central()
    inv.set_fleet(backup_remote={"url": URL, "host_key": ED25519})
    inv.set_host("minoa-pediada", backup_remote={})
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


def test_remote_down_is_partial_exit_5_with_controls_archive(
    fleet: model.Fleet, state_dir: Path
) -> None:
    herso, control = fleet.get("hersonissos"), fleet.get("control")
    FakeGuest.replies = {str(herso.ip): CREATED + "\n#kk-leg control 0\n" + DOWN}
    result = _invoke("backup", "hersonissos", "--json")
    assert isinstance(result.exception, backups.BackupError), result.output
    assert result.exception.exit_code == 5
    assert "off-site copy failed on: hersonissos (control's archive was made)" in str(
        result.exception.message
    )
    [got] = json.loads(result.output[result.output.index("{") :])["municipalities"]
    assert got["result"] == "partial"
    assert got["archive"]["name"] == "hersonissos-2026-12-01T10:13:18"
    assert got["remote"]["result"] == "failed" and got["remote"]["archive"] is None
    assert got["remote"]["detail"].startswith("the remote cannot be reached")
    [script] = [s for h, s, _ in FakeGuest.asked if h == str(herso.ip)]
    assert "kk_leg offsite /etc/borgmatic/offsite.yaml" in script
    [run] = journal.Journal(state_dir).runs()
    assert run.exit_code == 5 and [r.result for r in run.results] == ["partial"]
    metrics = [s for h, s, _ in FakeGuest.asked if h == str(control.ip) and ".prom" in s]
    assert 'kallikratis_backup_last_run_remote_success{municipality="hersonissos"} 0' in metrics[0]


def test_both_copies_made_table_names_the_off_site_archive(fleet: model.Fleet) -> None:
    herso = fleet.get("hersonissos")
    legs = CREATED + "\n#kk-leg control 0\n" + CREATED + "\n#kk-leg offsite 0\n"
    FakeGuest.replies = {str(herso.ip): legs}
    result = _invoke("backup", "hersonissos")
    assert result.exit_code == 0, result.output
    assert "off-site copy hersonissos-2026-12-01T10:13:18" in result.output


def test_remote_down_in_the_table_reads_ok_remote_failed(fleet: model.Fleet) -> None:
    herso = fleet.get("hersonissos")
    FakeGuest.replies = {str(herso.ip): CREATED + "\n#kk-leg control 0\n" + DOWN}
    result = _invoke("backup", "hersonissos")
    assert isinstance(result.exception, backups.BackupError)
    assert result.exception.exit_code == 5
    assert "ok (remote failed)" in result.output
    assert "remote failed: the remote cannot be reached" in " ".join(result.output.split())


def test_remote_keys_prints_public_keys_forced_append_only(
    fleet: model.Fleet, state_dir: Path
) -> None:
    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    result = _invoke("backup", "remote-keys", "--json")
    assert result.exit_code == 0, result.output
    got = {r["slug"]: r for r in json.loads(result.output)["municipalities"]}
    assert "minoa-pediada" not in got  # its own backup_remote: {} (none)
    for slug in ("hersonissos", "archanes-asterousia"):
        public = keys.paths.backup_public_key(slug).read_text().split()
        line = got[slug]["authorized_keys"]
        assert line == (
            'restrict,command="borg serve --append-only --restrict-to-repository '
            f'/srv/kallikratis/{slug}" {public[0]} {public[1]} kallikratis-backup@{slug}'
        )
        assert got[slug]["repository"] == f"{URL}/{slug}"
    for m in fleet.tenants:  # nothing secret: no private key, no passphrase
        assert read_secret(fleet, m.slug, keys, "vault_backup_passphrase") not in result.output
    assert "PRIVATE KEY" not in result.output
    assert FakeGuest.asked == []  # read from the controller's state, no VM asked
    text = _invoke("backup", "remote-keys")
    assert text.exit_code == 0
    assert got["hersonissos"]["authorized_keys"] in text.output.replace("\n", "")


def test_remote_keys_without_any_remote_exits_2(inv: InventoryCopy, fleet: model.Fleet) -> None:
    inv.set_fleet(backup_remote={})
    result = _invoke("backup", "remote-keys")
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert "no municipality has a backup_remote" in result.exception.message


def test_backups_remote_reads_through_the_vm(fleet: model.Fleet) -> None:
    herso, control = fleet.get("hersonissos"), fleet.get("control")
    FakeGuest.replies = {str(herso.ip): f"[{INFO}]"}  # borgmatic info --json: one repository
    result = _invoke("backups", "hersonissos", "--remote", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["repository"] == f"{URL}/hersonissos"
    assert [a["name"] for a in data["archives"]] == [
        "hersonissos-2026-12-01T10:13:16",
        "hersonissos-2026-12-01T10:13:18",
    ]
    [(host, script, stdin)] = FakeGuest.asked
    assert host == str(herso.ip) != str(control.ip) and stdin is None
    assert "borgmatic --config /etc/borgmatic/offsite.yaml info --json" in script


def test_backups_remote_of_a_municipality_without_one_exits_2(fleet: model.Fleet) -> None:
    result = _invoke("backups", "minoa-pediada", "--remote")
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert "minoa-pediada has no backup_remote" in result.exception.message
    assert FakeGuest.asked == []

"""`kallikratis hub harvest [--json]`: the report the harvester writes (a real harvest of loopback
stand-ins, one portal down) read by the CLI; the command without a hub VM (exit 2), with a
hub that cannot be reached (the real ssh against a closed port: exit 1), and its table, JSON
and exit 5 for stale municipalities over the SSH step's answer."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hubsupport import closed_port, write_config
from kallikratis import hubharvest
from kallikratis.cli import main_group
from kallikratis.commands import common
from kallikratis.guest import Guest
from kallikratis.provision import Engine
from kallikratis.ssh import SshTarget
from kallikratis_hub import harvest
from reportsupport import MakeEngine, code, running_engine
from support import InventoryCopy

from tests.helpers.loopback import http_server
from tests.helpers.portalstandin import Portal, Region


@pytest.fixture
def last_run(tmp_path: Path) -> str:
    """last-run.json of a real harvest: hersonissos answers, viannos is down."""
    reg = Region()
    with http_server(reg.handler()) as base:
        reg.portals["hersonissos"] = Portal()
        down = f"http://127.0.0.1:{closed_port()}/viannos/"
        cfg = write_config(tmp_path, base, ["hersonissos", "viannos"], urls={"viannos": down})
        harvest.run(cfg, datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    return (cfg.state_dir / "last-run.json").read_text(encoding="utf-8")


def test_the_cli_reads_what_the_harvester_writes(last_run: str) -> None:
    rep = hubharvest.parse_report(last_run)
    assert rep.finished == "2026-12-01T10:00:00Z"
    rows = {o.slug: o for o in rep.municipalities}
    assert (rows["hersonissos"].new, rows["hersonissos"].stale) == (7, False)
    assert rows["viannos"].stale and "Connection refused" in (rows["viannos"].error or "")
    assert rep.stale == ["viannos"]


@pytest.mark.parametrize("text", ["", "{", '{"municipalities": [{"slug": "a"}]}', "[]"])
def test_an_unreadable_report_is_an_error(text: str) -> None:
    with pytest.raises(hubharvest.HubError) as err:
        hubharvest.parse_report(text)
    assert err.value.exit_code == 1 and "unreadable" in err.value.message


def _cli(engine: Engine, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setattr(common.Context, "engine", property(lambda _self: engine))
    monkeypatch.setattr(common.Context, "fleet", property(lambda _self: engine.fleet))
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(engine.state_dir))
    return CliRunner().invoke(main_group, ["-i", str(engine.fleet.inventory), "hub", *args])


def test_without_a_hub_vm_the_command_is_refused(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = running_engine(inv, make_engine, ())
    result = _cli(engine, monkeypatch, "harvest")
    assert code(result) == 2 and "role hub" in str(result.exception)


def test_table_json_and_exit_5_for_stale_municipalities(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, last_run: str
) -> None:
    inv.add_central("hub", central_roles=["hub"])
    engine = running_engine(inv, make_engine, ())
    scripts: list[str] = []

    def over_ssh(self: Guest, script: str, **_: object) -> str:
        # the SSH step's answer: what `systemctl start ...; cat last-run.json` prints
        scripts.append(script)
        assert self.target.host == str(engine.fleet.get("hub").ip)
        return last_run

    monkeypatch.setattr(Guest, "run", over_ssh)
    result = _cli(engine, monkeypatch, "harvest", "--json")
    assert code(result) == 5 and "viannos" in str(result.exception)
    assert scripts == [hubharvest.HARVEST_SCRIPT]
    data = json.loads(result.stdout)
    assert [m["slug"] for m in data["municipalities"]] == ["hersonissos", "viannos"]
    assert data["municipalities"][0]["new"] == 7
    table = _cli(engine, monkeypatch, "harvest")
    assert code(table) == 5
    assert "hersonissos" in table.stdout and "stale" in table.stdout


def test_a_hub_that_cannot_be_reached_fails_with_exit_1(tmp_path: Path) -> None:
    """The real ssh against a closed port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    key = tmp_path / "id_ed25519"
    key.write_text("")
    target = SshTarget("admin", "127.0.0.1", key, known_hosts, port=port)
    with pytest.raises(hubharvest.HubError) as err:
        hubharvest.harvest(target)
    assert err.value.exit_code == 1 and "cannot run the harvest on 127.0.0.1" in err.value.message

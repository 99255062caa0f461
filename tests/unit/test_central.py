"""The center's own VMs (inventory group `central`): loaded, built and fenced like the others,
with the differences that make them the center: no tenant isolation of their own port, a place
among every municipality's management sources, and what the monitoring needs to know."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import click
import pytest
from click.testing import CliRunner
from kallikratis import inventory, model
from kallikratis.checks.helpers_data import applies
from kallikratis.commands.lifecycle import _confirm_central
from kallikratis.documents import VmKeys, compose
from kallikratis.errors import InventoryError
from kallikratis.provision import Engine
from kallikratis.secrets import CONTROL_SECRET_NAMES, SECRET_NAMES, secret_names
from kallikratis.stackvars import municipality_vars
from support import CRETE, SLUGS, InventoryCopy, fixed_client_public_key, fixed_host_key

MakeEngine = Callable[[model.Fleet], Engine]


def _problems(inv: InventoryCopy) -> list[str]:
    with pytest.raises(InventoryError) as err:
        inv.load()
    return [str(p) for p in err.value.problems]


def test_control_is_a_managed_vm_of_its_own_kind(inv: InventoryCopy) -> None:
    inv.add_central()
    fleet = inv.load()
    control = fleet.get("control")
    assert control.is_central and control.central_roles == ("control",)
    assert control.modules == () and control.datasets == ()
    assert control.domain == "control.crete.kallikratis.test"
    assert control.vm_name == "crete-control"
    assert [m.slug for m in fleet.tenants] == list(SLUGS)
    assert fleet.control == control and fleet.central == (control,)
    assert control in fleet.municipalities  # status, plan, destroy, patch, verify see it
    assert control.ip not in {m.ip for m in fleet.tenants}


def test_control_joins_the_management_sources_of_every_vm(
    inv: InventoryCopy, state_dir: Any
) -> None:
    inv.add_central()
    fleet = inv.load()
    control = fleet.get("control")
    wanted = [f"{fleet.network.controller}/32", f"{control.ip}/32"]
    assert [str(n) for n in fleet.management_sources] == wanted
    for m in fleet.municipalities:
        values = municipality_vars(fleet, m, state_dir)
        assert values["kallikratis_mgmt_networks"] == wanted
        assert values["kallikratis_central_roles"] == list(m.central_roles)
    assert municipality_vars(fleet, fleet.get(SLUGS[0]), state_dir)[
        "kallikratis_control_hosts"
    ] == ["control"]


def test_control_is_told_what_to_monitor_and_where_alerts_go(
    inv: InventoryCopy, state_dir: Any
) -> None:
    inv.add_central()
    inv.set_fleet(alert_email="noc@example.gr", alert_smtp_smarthost="mail.example.gr:25")
    fleet = inv.load()
    values = municipality_vars(fleet, fleet.get("control"), state_dir)
    targets = values["kallikratis_monitoring_targets"]
    assert [t["slug"] for t in targets] == list(SLUGS)  # tenants only, never itself
    herso = next(t for t in targets if t["slug"] == "hersonissos")
    assert herso["modules"] == ["portal", "opendata", "education"]
    assert herso["ip"] == str(fleet.get("hersonissos").ip)
    assert values["kallikratis_alert_email"] == "noc@example.gr"
    assert values["kallikratis_alert_smtp_smarthost"] == "mail.example.gr:25"
    assert values["kallikratis_alert_webhook_url"] == ""
    assert "kallikratis_monitoring_targets" not in municipality_vars(
        fleet, fleet.get(SLUGS[0]), state_dir
    )


def test_central_port_is_not_isolated_but_still_filtered(inv: InventoryCopy) -> None:
    inv.add_central()
    fleet = inv.load()
    keys = VmKeys(fixed_host_key(), fixed_client_public_key())
    domain = ET.fromstring(compose(fleet, fleet.get("control"), keys, "0123456789ab").domain)
    iface = domain.find("./devices/interface")
    assert iface is not None and iface.find("port") is None
    filterref = iface.find("filterref")
    assert filterref is not None and filterref.get("filter") == model.NWFILTER
    spec = model.vm_spec(fleet, fleet.get("control"), "")
    assert spec["isolation"] == model.CENTRAL_ISOLATION
    assert spec["central_roles"] == ["control"]
    assert "central_roles" not in model.vm_spec(fleet, fleet.get(SLUGS[0]), "")


def test_up_builds_control_with_the_municipalities(
    inv: InventoryCopy, make_engine: MakeEngine
) -> None:
    inv.use_test_driver()
    inv.add_central()
    fleet = inv.load()
    engine = make_engine(fleet)
    results = {
        r.slug: r.result for r in engine.up(fleet.municipalities, lambda *a: None, wait=False)
    }
    assert results == dict.fromkeys([*SLUGS, "control"], "created")
    assert {it.slug: it.action for it in engine.plan(fleet.municipalities)} == dict.fromkeys(
        [*SLUGS, "control"], "unchanged"
    )


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"central_roles": ["monitoring"]}, "central_roles", "unknown central role"),
        ({"central_roles": "control"}, "central_roles", "non-empty list"),
        ({"modules": ["portal"]}, "modules", "not municipal modules"),
    ],
)
def test_bad_central_entries_name_file_entry_and_field(
    inv: InventoryCopy, change: dict[str, Any], field: str, words: str
) -> None:
    inv.add_central(**change)
    problems = _problems(inv)
    assert any(
        "hosts.yml" in p and "control" in p and field in p and words in p for p in problems
    ), problems


def test_a_central_vm_without_roles_must_say_what_it_runs(inv: InventoryCopy) -> None:
    inv.edit(
        inv.hosts,
        lambda d: d["all"]["children"].update({"central": {"hosts": {"vault-1": None}}}),
    )
    assert any("vault-1" in p and "central_roles" in p for p in _problems(inv))


def test_a_host_in_both_groups_is_refused(inv: InventoryCopy) -> None:
    inv.add_central(SLUGS[0])
    assert any(SLUGS[0] in p and "both" in p for p in _problems(inv))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"alert_email": "not an address", "alert_smtp_smarthost": "mail:25"}, "alert_email"),
        ({"alert_email": "noc@example.gr"}, "needs alert_smtp_smarthost"),
        ({"alert_webhook_url": "ftp://x.example.gr/"}, "alert_webhook_url"),
        ({"alert_webhook_url": "https://x.example.gr/\nX: y"}, "alert_webhook_url"),
        ({"alert_smtp_smarthost": "mail.example.gr"}, "alert_smtp_smarthost"),
    ],
)
def test_bad_alert_settings_are_refused(
    inv: InventoryCopy, values: dict[str, str], field: str
) -> None:
    inv.set_fleet(**values)
    problems = _problems(inv)
    assert any("fleet.yml" in p and field in p for p in problems), problems


def test_control_keeps_only_its_own_secrets(inv: InventoryCopy) -> None:
    inv.add_central()
    fleet = inv.load()
    assert secret_names(fleet.get("control")) == CONTROL_SECRET_NAMES
    assert secret_names(fleet.get(SLUGS[0])) == SECRET_NAMES


def test_verify_runs_the_stack_suites_on_municipalities_and_monitoring_on_control() -> None:
    tenant: dict[str, Any] = {"central_roles": []}
    control = {"central_roles": ["control"]}
    for suite in ("test_web.py", "test_portal.py", "test_opendata.py", "test_education.py"):
        assert applies(suite, tenant) and not applies(suite, control)
    assert applies("test_monitoring.py", control) and not applies("test_monitoring.py", tenant)
    assert applies("test_base.py", tenant) and applies("test_base.py", control)


@pytest.mark.parametrize(("typed", "destroyed"), [("control\n", True), ("hersonissos\n", False)])
def test_destroying_a_central_vm_asks_for_its_name(
    inv: InventoryCopy, typed: str, destroyed: bool
) -> None:
    inv.add_central()
    fleet = inv.load()

    @click.command()
    def confirm() -> None:
        _confirm_central(fleet, ["hersonissos", "control"])
        click.echo("confirmed")

    result = CliRunner().invoke(confirm, input=typed)
    assert ("confirmed" in result.output) is destroyed
    assert result.exit_code == (0 if destroyed else 1)


def test_loading_does_not_mix_central_addresses_with_the_shipped_ones() -> None:
    fleet = inventory.load(CRETE)
    ips = [m.ip for m in fleet.municipalities]
    assert len(set(ips)) == len(ips)
    assert all(ip in fleet.network.cidr for ip in ips)
    assert (
        fleet.control is not None
        and ipaddress.IPv4Network(f"{fleet.control.ip}/32") in fleet.management_sources
    )

"""Tenant isolation as the controller writes it: the VM's port and filter, the management
sources every VM's firewall accepts, and what `verify` counts as a correct firewall.

The traffic itself (a neighbour's SSH does not answer, a spoofed source gets nothing through)
is tested on real VMs in tests/e2e/test_isolation.py.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from kallikratis import model
from kallikratis.checks.test_base import mgmt_sources_accepted
from kallikratis.documents import VmKeys, compose
from kallikratis.provision import Engine
from kallikratis.stackvars import municipality_vars
from support import SLUGS, InventoryCopy, fixed_client_public_key, fixed_host_key

MakeEngine = Callable[[model.Fleet], Engine]


def _interface(fleet: model.Fleet, slug: str) -> ET.Element:
    keys = VmKeys(fixed_host_key(), fixed_client_public_key())
    domain = compose(fleet, fleet.get(slug), keys, "0123456789ab").domain
    iface = ET.fromstring(domain).find("./devices/interface")
    assert iface is not None
    return iface


@pytest.mark.parametrize("slug", SLUGS)
def test_every_vm_has_an_isolated_port_and_clean_traffic_bound_to_its_own_ip(
    inv: InventoryCopy, slug: str
) -> None:
    fleet = inv.load()
    iface = _interface(fleet, slug)
    port = iface.find("port")
    assert port is not None and port.get("isolated") == "yes"
    filterref = iface.find("filterref")
    assert filterref is not None and filterref.get("filter") == "clean-traffic"
    params = {p.get("name"): p.get("value") for p in filterref.findall("parameter")}
    assert params == {"IP": str(fleet.get(slug).ip)}
    mac = iface.find("mac")
    assert mac is not None and mac.get("address") == fleet.get(slug).mac  # the filter's MAC


def test_an_existing_bridge_isolates_too(inv: InventoryCopy) -> None:
    inv.edit(
        inv.fleet_vars,
        lambda d: d["fleet_network"].update(mode="bridge", bridge="br-dc0", controller="10.42.0.9"),
    )
    iface = _interface(inv.load(), "hersonissos")
    assert iface.get("type") == "bridge"
    assert iface.find("port") is not None and iface.find("filterref") is not None


def test_management_sources_are_the_controller_not_the_fleet_subnet(
    inv: InventoryCopy, state_dir: Any
) -> None:
    fleet = inv.load()
    assert fleet.network.controller == fleet.network.gateway  # libvirt's side of the bridge
    for m in fleet.municipalities:
        assert municipality_vars(fleet, m, state_dir)["kallikratis_mgmt_networks"] == [
            f"{fleet.network.gateway}/32"
        ]


def test_on_a_bridge_the_given_controller_is_the_only_source(
    inv: InventoryCopy, state_dir: Any
) -> None:
    inv.edit(
        inv.fleet_vars,
        lambda d: d["fleet_network"].update(mode="bridge", bridge="br-dc0", controller="10.42.0.9"),
    )
    fleet = inv.load()
    assert fleet.management_sources == (ipaddress.IPv4Network("10.42.0.9/32"),)
    vars_ = municipality_vars(fleet, fleet.get("hersonissos"), state_dir)
    assert vars_["kallikratis_mgmt_networks"] == ["10.42.0.9/32"]


def test_a_vm_made_before_isolation_is_planned_as_changed(
    inv: InventoryCopy, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv.use_test_driver()
    real_spec = model.vm_spec

    def spec_without_isolation(*args: Any) -> dict[str, Any]:
        spec = real_spec(*args)
        del spec["isolation"]
        return spec

    monkeypatch.setattr(model, "vm_spec", spec_without_isolation)
    engine = make_engine(inv.load())
    assert {
        r.result for r in engine.up(engine.fleet.municipalities, lambda *_: None, wait=False)
    } == {"created"}
    monkeypatch.setattr(model, "vm_spec", real_spec)
    changed = make_engine(inv.load())
    plan = changed.plan(changed.fleet.municipalities)
    assert {it.action for it in plan} == {"change"}
    for item in plan:
        assert [(k, a, b) for k, a, b in item.changes] == [
            ("isolation", None, model.TENANT_ISOLATION)
        ]


# --------------------------------------------------------------------- what verify accepts


def _rule(port: int, saddr: Any = None) -> dict[str, Any]:
    expr: list[dict[str, Any]] = []
    if saddr is not None:
        expr.append(
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": saddr,
                }
            }
        )
    expr += [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": {"set": [port, 9100]},
            }
        },
        {"accept": None},
    ]
    return {"expr": expr}


def _set(*elems: Any) -> dict[str, Any]:
    return {"mgmt4": {"name": "mgmt4", "elem": list(elems)}}


def test_verify_reads_the_controller_alone_as_the_source() -> None:
    accepted = mgmt_sources_accepted([_rule(22, "@mgmt4")], _set("10.42.0.1"), 22)
    assert accepted == [ipaddress.IPv4Network("10.42.0.1/32")]


def test_verify_sees_the_whole_subnet_where_it_is_allowed() -> None:
    # The firewall every VM had before tenant isolation: "a subset of the fleet subnet" passed
    # the old check; the exact comparison with the management sources does not.
    subnet = {"prefix": {"addr": "10.42.0.0", "len": 24}}
    accepted = mgmt_sources_accepted([_rule(22, "@mgmt4")], _set(subnet), 22)
    assert accepted == [ipaddress.IPv4Network("10.42.0.0/24")]
    assert accepted != [ipaddress.IPv4Network("10.42.0.1/32")]


def test_verify_sees_a_second_rule_that_lets_a_neighbour_in() -> None:
    rules = [_rule(22, "@mgmt4"), _rule(22, "10.42.0.57")]
    accepted = mgmt_sources_accepted(rules, _set("10.42.0.1"), 22)
    assert accepted == [
        ipaddress.IPv4Network("10.42.0.1/32"),
        ipaddress.IPv4Network("10.42.0.57/32"),
    ]


def test_verify_sees_a_port_open_to_everyone() -> None:
    assert mgmt_sources_accepted([_rule(22, "@mgmt4"), _rule(22)], _set("10.42.0.1"), 22) is None

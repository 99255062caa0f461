"""Bad fleet-wide inputs: network mode and name servers, fleet domain, storage pool, admin
account and keys, domain type, VM profiles. Each one problem, named by file, entry and field;
exit code 2; nothing changed."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from kallikratis.cli import main_group
from kallikratis.errors import InventoryError
from kallikratis.inventory import DOMAIN_TYPE_ENV
from support import FLEET, HOSTS, Bad, InventoryCopy, assert_one_problem

HV_VARS = "group_vars/hypervisors.yml"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdmin admin@crete"


def _network(**values: Any) -> Any:
    def mutate(i: InventoryCopy) -> None:
        i.edit(i.fleet_vars, lambda d: d["fleet_network"].update(values))

    return mutate


def _pool(**values: Any) -> Any:
    def mutate(i: InventoryCopy) -> None:
        i.edit(i.fleet_vars, lambda d: d["fleet_storage_pool"].update(values))

    return mutate


def _profiles(**values: Any) -> Any:
    def mutate(i: InventoryCopy) -> None:
        i.edit(i.fleet_vars, lambda d: d["vm_profiles"].update(values))

    return mutate


def _fleet(field: str, text: str = "", **values: Any) -> Bad:
    return Bad(lambda i: i.set_fleet(**values), FLEET, "all", field, text)


BAD_FLEET: dict[str, Bad] = {
    "mode-unknown": Bad(_network(mode="bridged"), FLEET, "all", "fleet_network.mode", "one of"),
    "mode-trailing-newline": Bad(_network(mode="nat\n"), FLEET, "all", "fleet_network.mode"),
    "mode-a-list": Bad(_network(mode=["nat"]), FLEET, "all", "fleet_network.mode"),
    "network-name-newline": Bad(
        _network(name="kallikratis-crete\n<x/>"), FLEET, "all", "fleet_network.name"
    ),
    "network-name-not-a-string": Bad(_network(name=42), FLEET, "all", "fleet_network.name"),
    "bridge-too-long": Bad(
        _network(bridge="kallikratis-crete"), FLEET, "all", "fleet_network.bridge", "at most 15"
    ),
    "bridge-slash": Bad(_network(bridge="br/0"), FLEET, "all", "fleet_network.bridge"),
    "controller-missing-on-a-bridge": Bad(
        _network(mode="bridge", bridge="br-dc0"),
        FLEET,
        "all",
        "fleet_network.controller",
        "required",
    ),
    "controller-not-an-address": Bad(
        _network(controller="10.77.0.1\n"), FLEET, "all", "fleet_network.controller", "IPv4"
    ),
    "controller-outside-the-network": Bad(
        _network(controller="192.0.2.1"), FLEET, "all", "fleet_network.controller", "host address"
    ),
    "dns-not-a-list": Bad(
        _network(dns="10.42.0.1"), FLEET, "all", "fleet_network.dns", "must be a list"
    ),
    "dns-empty": Bad(_network(dns=[]), FLEET, "all", "fleet_network.dns", "must be a list"),
    "dns-a-name": Bad(
        _network(dns=["10.42.0.1", "ns.example.org"]),
        FLEET,
        "all",
        "fleet_network.dns",
        "not an IP address: 'ns.example.org'",
    ),
    "dns-trailing-newline": Bad(
        _network(dns=["10.42.0.1\n"]), FLEET, "all", "fleet_network.dns", "not an IP address"
    ),
    "dns-a-number": Bad(_network(dns=[8]), FLEET, "all", "fleet_network.dns"),
    "fleet-domain-single-label": _fleet("fleet_domain", "not a valid domain", fleet_domain="crete"),
    "fleet-domain-trailing-newline": _fleet(
        "fleet_domain", "not a valid domain", fleet_domain="crete.kallikratis.test\n"
    ),
    "fleet-domain-inner-newline": _fleet(
        "fleet_domain", fleet_domain="crete.kallikratis.test\nevil.example"
    ),
    "fleet-domain-not-a-string": _fleet("fleet_domain", fleet_domain=42),
    "fleet-domain-underscore": _fleet("fleet_domain", fleet_domain="crete_1.gr"),
    "pool-not-a-mapping": _fleet(
        "fleet_storage_pool", "must be a mapping", fleet_storage_pool="kallikratis"
    ),
    "pool-name-newline": Bad(
        _pool(name="kallikratis\n<pool>"), FLEET, "all", "fleet_storage_pool.name", "not a storage"
    ),
    "pool-name-space": Bad(_pool(name="my pool"), FLEET, "all", "fleet_storage_pool.name"),
    "pool-name-not-a-string": Bad(_pool(name=7), FLEET, "all", "fleet_storage_pool.name"),
    "pool-path-relative": Bad(
        _pool(path="images/kk"), FLEET, "all", "fleet_storage_pool.path", "absolute path"
    ),
    "pool-path-newline": Bad(
        _pool(path="/var/lib/kk\n/etc"), FLEET, "all", "fleet_storage_pool.path"
    ),
    "admin-user-root": _fleet("admin_user", "non-root", admin_user="root"),
    "admin-user-trailing-newline": _fleet("admin_user", "non-root", admin_user="kallikratis\n"),
    "admin-user-space": _fleet("admin_user", admin_user="kk admin"),
    "admin-user-empty": _fleet("admin_user", "non-empty string", admin_user=""),
    "admin-user-not-a-string": _fleet("admin_user", admin_user=["kallikratis"]),
    "admin-keys-not-a-list": _fleet("admin_ssh_keys", "must be a list", admin_ssh_keys=ADMIN_KEY),
    "admin-key-not-a-string": _fleet("admin_ssh_keys[0]", admin_ssh_keys=[{"key": ADMIN_KEY}]),
    "admin-key-garbage": _fleet(
        "admin_ssh_keys[1]", "OpenSSH public key", admin_ssh_keys=[ADMIN_KEY, "hello world"]
    ),
    "admin-key-unknown-type": _fleet(
        "admin_ssh_keys[0]", admin_ssh_keys=["ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIAdmin x"]
    ),
    "admin-key-injects-a-second-line": _fleet(
        "admin_ssh_keys[0]",
        admin_ssh_keys=[ADMIN_KEY + "\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB evil"],
    ),
    "admin-key-trailing-newline": _fleet("admin_ssh_keys[0]", admin_ssh_keys=[ADMIN_KEY + "\n"]),
    "admin-key-u2028-in-comment": _fleet(
        "admin_ssh_keys[0]", admin_ssh_keys=[ADMIN_KEY + "\u2028ssh-rsa AAAA"]
    ),
    "domain-type-unknown": Bad(
        lambda i: i.edit(i.hv_vars, lambda d: d.update(domain_type="xen")),
        HV_VARS,
        "hv01",
        "domain_type",
        "must be one of ('kvm', 'qemu'), got 'xen'",
    ),
    "domain-type-trailing-newline": Bad(
        lambda i: i.edit(i.hv_vars, lambda d: d.update(domain_type="kvm\n")),
        HV_VARS,
        "hv01",
        "domain_type",
    ),
    "domain-type-on-the-host": Bad(
        lambda i: i.set_hypervisor(domain_type="lxc"), HOSTS, "hv01", "domain_type"
    ),
    "profiles-a-list": _fleet("vm_profiles", "non-empty mapping", vm_profiles=["small"]),
    "profiles-empty": _fleet("vm_profiles", "non-empty mapping", vm_profiles={}),
    "profile-not-a-mapping": Bad(
        _profiles(medium=4), FLEET, "all", "vm_profiles.medium", "must be a mapping"
    ),
    "profile-missing-size": Bad(
        _profiles(medium={"vcpus": 2, "memory_mib": 2048}),
        FLEET,
        "all",
        "vm_profiles.medium.disk_gib",
        "positive integer",
    ),
    "profile-name-newline": Bad(
        _profiles(**{"x\nlarge": {"vcpus": 1, "memory_mib": 512, "disk_gib": 5}}),
        FLEET,
        "all",
        "vm_profiles",
        "not a profile name",
    ),
}


@pytest.mark.parametrize("case_id", list(BAD_FLEET))
def test_bad_fleet_input_is_one_problem_and_changes_nothing(
    inv: InventoryCopy, case_id: str
) -> None:
    case = BAD_FLEET[case_id]
    case.mutate(inv)
    before = inv.snapshot()
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert_one_problem(err.value, inv.root, case)
    assert inv.snapshot() == before


def test_bad_domain_type_from_the_environment_is_one_problem(
    inv: InventoryCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DOMAIN_TYPE_ENV, "xen")
    with pytest.raises(InventoryError) as err:
        inv.load()
    [problem] = err.value.problems
    assert (problem.entry, problem.field) == ("environment", DOMAIN_TYPE_ENV)


def test_valid_fleet_values_are_accepted(inv: InventoryCopy) -> None:
    _network(mode="route", dns=["10.42.0.1", "2001:db8::53"])(inv)
    _pool(name="kk.pool_1", path="/srv/kallikratis/images")(inv)
    inv.set_fleet(admin_user="ops", admin_ssh_keys=[ADMIN_KEY, ADMIN_KEY.split(" a")[0]])
    fleet = inv.load()
    assert fleet.network.dns == ("10.42.0.1", "2001:db8::53")
    assert (fleet.pool.name, fleet.pool.path) == ("kk.pool_1", "/srv/kallikratis/images")
    assert fleet.admin_ssh_keys == (ADMIN_KEY, ADMIN_KEY.split(" a")[0])


def test_validate_reports_a_bad_fleet_field_with_exit_code_2(inv: InventoryCopy) -> None:
    inv.set_fleet(fleet_domain="crete.kallikratis.test\n")
    before = inv.snapshot()
    result = CliRunner().invoke(main_group, ["-i", str(inv.root), "validate", "--offline"])
    assert isinstance(result.exception, InventoryError)
    assert result.exception.exit_code == 2
    assert f"{inv.fleet_vars}: all: fleet_domain: " in result.exception.message
    assert inv.snapshot() == before

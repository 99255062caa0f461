"""Loading and validating inventories: the shipped Crete fleet, stable defaults, every bad input."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from kallikratis import inventory
from kallikratis.capacity import check_capacity
from kallikratis.errors import InventoryError
from kallikratis.hypervisor import connect
from support import (
    CRETE,
    FLEET,
    GREEK,
    HERSO_VARS,
    HOSTILE_NAME,
    HOSTS,
    SLUGS,
    Bad,
    InventoryCopy,
    assert_one_problem,
)

# --------------------------------------------------------------------------- the shipped fleet


def test_shipped_crete_inventory_loads() -> None:
    fleet = inventory.load(CRETE)
    assert fleet.name == "crete"
    assert [m.slug for m in fleet.tenants] == list(SLUGS)
    assert {m.slug: m.display_name for m in fleet.tenants} == GREEK
    assert [m.vm_name for m in fleet.tenants] == [f"crete-{s}" for s in SLUGS]
    assert [(m.slug, m.central_roles) for m in fleet.central] == [
        ("control", ("control",)),
        ("hub", ("hub",)),
    ]
    assert fleet.get("control").domain == "control.crete.kallikratis.test"
    assert fleet.get("hersonissos").modules == ("portal", "opendata", "education")
    assert fleet.get("minoa-pediada").modules == ("portal", "opendata")
    assert fleet.get("hersonissos").domain == "hersonissos.crete.kallikratis.test"
    assert fleet.network.cidr == ipaddress.IPv4Network("10.42.0.0/24")
    assert list(fleet.hypervisors) == ["hv01"]


def test_loading_twice_gives_the_same_defaults() -> None:
    first = inventory.load(CRETE)
    second = inventory.load(CRETE)
    assert first.municipalities == second.municipalities
    for m in first.municipalities:
        assert m.ip in first.network.cidr
        assert m.ip not in (
            first.network.gateway,
            first.network.cidr.network_address,
            first.network.cidr.broadcast_address,
        )
        assert m.mac.startswith("52:54:00:")


def test_accepts_a_hosts_file_path_as_well_as_the_directory() -> None:
    by_file = inventory.load(CRETE / "hosts.yml")
    assert by_file.municipalities == inventory.load(CRETE).municipalities


def test_new_municipality_keeps_existing_addresses(inv: InventoryCopy) -> None:
    before = {m.slug: (m.ip, m.mac) for m in inv.load().municipalities}
    inv.add_host("malevizi", display_name="Δήμος Μαλεβιζίου")
    fleet = inv.load()
    after = {m.slug: (m.ip, m.mac) for m in fleet.municipalities}
    assert {s: after[s] for s in SLUGS} == before
    assert after["malevizi"][0] not in {ip for ip, _ in before.values()}
    assert after["malevizi"][1] not in {mac for _, mac in before.values()}


def test_addresses_never_collide_in_a_crowded_network(inv: InventoryCopy) -> None:
    inv.add_many(150, "town")
    fleet = inv.load()
    ips = [m.ip for m in fleet.municipalities]
    macs = [m.mac for m in fleet.municipalities]
    assert len(fleet.municipalities) == 153
    assert len(set(ips)) == len(ips)
    assert len(set(macs)) == len(macs)
    assert all(ip in fleet.network.cidr and ip != fleet.network.gateway for ip in ips)


def test_a_full_network_is_reported_not_overbooked(inv: InventoryCopy) -> None:
    inv.set_fleet(fleet_network={"cidr": "10.42.0.0/29", "gateway": "10.42.0.1"})
    inv.add_many(6, "town")
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert any(p.field == "ip" and "no free address" in p.message for p in err.value.problems)


def test_explicit_ip_and_mac_override_the_defaults(inv: InventoryCopy) -> None:
    default = inv.load().get("minoa-pediada")
    inv.set_host("minoa-pediada", ip="10.42.0.200", mac="52:54:00:AA:BB:CC")
    m = inv.load().get("minoa-pediada")
    assert m.ip == ipaddress.IPv4Address("10.42.0.200") != default.ip
    assert m.mac == "52:54:00:aa:bb:cc" != default.mac


def test_explicit_ip_is_never_given_to_another_municipality(inv: InventoryCopy) -> None:
    taken = inv.load().get("hersonissos").ip
    inv.set_host("minoa-pediada", ip=str(taken))
    fleet = inv.load()
    assert fleet.get("minoa-pediada").ip == taken
    assert fleet.get("hersonissos").ip != taken


def test_host_vars_file_overrides_hosts_yml(inv: InventoryCopy) -> None:
    inv.set_host_var_file("hersonissos", profile="large", display_name="Δήμος Χερσονήσου (ΗΡ)")
    m = inv.load().get("hersonissos")
    assert m.profile.name == "large" and m.profile.vcpus == 4
    assert m.display_name == "Δήμος Χερσονήσου (ΗΡ)"


@pytest.mark.parametrize(
    "name",
    [
        "Δήμος Χερσονήσου",
        HOSTILE_NAME,
        'quote " double',
        "quote ' single",
        "a & b",
        "<script>alert(1)</script>",
        "]]> cdata end",
        "back\\slash",
        "{{ fleet.name }} jinja",
        "{% if %} block",
        "100% percent",
    ],
    ids=[
        "greek",
        "hostile-all",
        "dquote",
        "squote",
        "amp",
        "tags",
        "cdata",
        "backslash",
        "jinja-expr",
        "jinja-block",
        "percent",
    ],
)
def test_hostile_display_names_are_valid_and_round_trip(inv: InventoryCopy, name: str) -> None:
    inv.set_host("hersonissos", display_name=name)
    assert inv.load().get("hersonissos").display_name == name


# --------------------------------------------------------------------------- bad inputs


BAD_CASES: dict[str, Bad] = {
    # a bad slug also makes the default domain <slug>.crete.kallikratis.test invalid
    "slug-underscore-capital": Bad(
        lambda i: i.rename_host("hersonissos", "Hersonissos_1"),
        HOSTS,
        "Hersonissos_1",
        "name",
        also=("domain",),
    ),
    "slug-leading-dash": Bad(
        lambda i: i.rename_host("hersonissos", "-bad"), HOSTS, "-bad", "name", also=("domain",)
    ),
    "slug-trailing-dash": Bad(
        lambda i: i.rename_host("hersonissos", "bad-"), HOSTS, "bad-", "name", also=("domain",)
    ),
    "slug-dot": Bad(lambda i: i.rename_host("hersonissos", "a.b"), HOSTS, "a.b", "name"),
    "slug-too-long-for-vm-name": Bad(
        lambda i: i.rename_host("hersonissos", "h" * 58), HOSTS, "h" * 58, "name"
    ),
    "slug-too-long-for-dns": Bad(
        lambda i: i.rename_host("hersonissos", "h" * 64), HOSTS, "h" * 64, "name", also=("domain",)
    ),
    "duplicate-ip": Bad(
        lambda i: (
            i.set_host("minoa-pediada", ip="10.42.0.50"),
            i.set_host_var_file("hersonissos", ip="10.42.0.50"),
        ),
        HERSO_VARS,
        "hersonissos",
        "ip",
        "also used by minoa-pediada",
    ),
    "duplicate-domain": Bad(
        lambda i: i.set_host("hersonissos", domain="minoa-pediada.crete.kallikratis.test"),
        HOSTS,
        "hersonissos",
        "domain",
        "also used by minoa-pediada",
    ),
    "ip-malformed": Bad(
        lambda i: i.set_host("hersonissos", ip="10.42.0.300"),
        HOSTS,
        "hersonissos",
        "ip",
        "not an IPv4 address",
    ),
    "ip-not-a-string": Bad(
        lambda i: i.set_host("hersonissos", ip=["10.42.0.5"]),
        HOSTS,
        "hersonissos",
        "ip",
        "not an IPv4 address",
    ),
    "ip-outside-subnet": Bad(
        lambda i: i.set_host("hersonissos", ip="10.43.0.5"), HOSTS, "hersonissos", "ip", "outside"
    ),
    "ip-network-address": Bad(
        lambda i: i.set_host("hersonissos", ip="10.42.0.0"),
        HOSTS,
        "hersonissos",
        "ip",
        "network, gateway or broadcast",
    ),
    "ip-gateway": Bad(
        lambda i: i.set_host("hersonissos", ip="10.42.0.1"),
        HOSTS,
        "hersonissos",
        "ip",
        "network, gateway or broadcast",
    ),
    "ip-broadcast": Bad(
        lambda i: i.set_host_var_file("hersonissos", ip="10.42.0.255"),
        HERSO_VARS,
        "hersonissos",
        "ip",
        "network, gateway or broadcast",
    ),
    "profile-unknown": Bad(
        lambda i: i.set_host("hersonissos", profile="huge"),
        HOSTS,
        "hersonissos",
        "profile",
        "unknown profile 'huge'",
    ),
    "module-unknown": Bad(
        lambda i: i.set_host("hersonissos", modules=["portal", "blog"]),
        HOSTS,
        "hersonissos",
        "modules",
        "unknown module 'blog'",
    ),
    "module-unknown-in-host-vars": Bad(
        lambda i: i.set_host_var_file("hersonissos", modules=["forum"]),
        HERSO_VARS,
        "hersonissos",
        "modules",
        "unknown module 'forum'",
    ),
    "modules-not-a-list": Bad(
        lambda i: i.set_host("hersonissos", modules="portal"),
        HOSTS,
        "hersonissos",
        "modules",
        "must be a list",
    ),
    "modules-a-mapping": Bad(
        lambda i: i.set_host("hersonissos", modules={"portal": True}),
        HOSTS,
        "hersonissos",
        "modules",
        "must be a list",
    ),
    "hypervisor-unknown": Bad(
        lambda i: i.set_host("hersonissos", hypervisor="hv99"),
        HOSTS,
        "hersonissos",
        "hypervisor",
        "unknown hypervisor 'hv99'",
    ),
    "display-name-missing": Bad(
        lambda i: i.unset_host("hersonissos", "display_name"), HOSTS, "hersonissos", "display_name"
    ),
    "display-name-empty": Bad(
        lambda i: i.set_host("hersonissos", display_name=""), HOSTS, "hersonissos", "display_name"
    ),
    "display-name-blank": Bad(
        lambda i: i.set_host("hersonissos", display_name="   "),
        HOSTS,
        "hersonissos",
        "display_name",
    ),
    "display-name-null": Bad(
        lambda i: i.set_host("hersonissos", display_name=None), HOSTS, "hersonissos", "display_name"
    ),
    "display-name-int": Bad(
        lambda i: i.set_host("hersonissos", display_name=42),
        HOSTS,
        "hersonissos",
        "display_name",
        "42",
    ),
    "display-name-list": Bad(
        lambda i: i.set_host("hersonissos", display_name=["Δήμος"]),
        HOSTS,
        "hersonissos",
        "display_name",
    ),
    "display-name-int-in-host-vars": Bad(
        lambda i: i.set_host_var_file("hersonissos", display_name=7),
        HERSO_VARS,
        "hersonissos",
        "display_name",
    ),
    "domain-space": Bad(
        lambda i: i.set_host("hersonissos", domain="not a domain"),
        HOSTS,
        "hersonissos",
        "domain",
        "not a valid domain name",
    ),
    "domain-underscore": Bad(
        lambda i: i.set_host("hersonissos", domain="her_sonissos.gr"),
        HOSTS,
        "hersonissos",
        "domain",
        "not a valid domain name",
    ),
    "domain-single-label": Bad(
        lambda i: i.set_host("hersonissos", domain="hersonissos"),
        HOSTS,
        "hersonissos",
        "domain",
        "not a valid domain name",
    ),
    "domain-leading-dash": Bad(
        lambda i: i.set_host("hersonissos", domain="-x.crete.gr"),
        HOSTS,
        "hersonissos",
        "domain",
        "not a valid domain name",
    ),
    "domain-not-a-string": Bad(
        lambda i: i.set_host("hersonissos", domain=12),
        HOSTS,
        "hersonissos",
        "domain",
        "not a valid domain name",
    ),
    "mac-not-hex": Bad(
        lambda i: i.set_host("hersonissos", mac="52:54:00:zz:00:01"),
        HOSTS,
        "hersonissos",
        "mac",
        "not a unicast MAC",
    ),
    "mac-short": Bad(
        lambda i: i.set_host("hersonissos", mac="52:54:00:00:01"),
        HOSTS,
        "hersonissos",
        "mac",
        "not a unicast MAC",
    ),
    "mac-cisco-notation": Bad(
        lambda i: i.set_host("hersonissos", mac="5254.0000.0001"),
        HOSTS,
        "hersonissos",
        "mac",
        "not a unicast MAC",
    ),
    "mac-multicast": Bad(
        lambda i: i.set_host("hersonissos", mac="01:00:5e:00:00:01"),
        HOSTS,
        "hersonissos",
        "mac",
        "not a unicast MAC",
    ),
    "mac-duplicate": Bad(
        lambda i: (
            i.set_host("minoa-pediada", mac="52:54:00:12:34:56"),
            i.set_host_var_file("hersonissos", mac="52:54:00:12:34:56"),
        ),
        HERSO_VARS,
        "hersonissos",
        "mac",
        "also used by minoa-pediada",
    ),
    "vcpus-zero": Bad(
        lambda i: i.set_profile("small", vcpus=0),
        FLEET,
        "all",
        "vm_profiles.small.vcpus",
        "positive integer",
    ),
    "memory-negative": Bad(
        lambda i: i.set_profile("small", memory_mib=-1),
        FLEET,
        "all",
        "vm_profiles.small.memory_mib",
        "positive integer",
    ),
    "disk-not-a-number": Bad(
        lambda i: i.set_profile("small", disk_gib="x"),
        FLEET,
        "all",
        "vm_profiles.small.disk_gib",
        "positive integer",
    ),
    "vcpus-boolean": Bad(
        lambda i: i.set_profile("medium", vcpus=True),
        FLEET,
        "all",
        "vm_profiles.medium.vcpus",
        "positive integer",
    ),
    "memory-float": Bad(
        lambda i: i.set_profile("large", memory_mib=1.5),
        FLEET,
        "all",
        "vm_profiles.large.memory_mib",
        "positive integer",
    ),
    "cidr-prefix-33": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.0/33"}),
        FLEET,
        "all",
        "fleet_network.cidr",
        "not a valid IPv4 network",
    ),
    "cidr-host-bits-set": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.1/24"}),
        FLEET,
        "all",
        "fleet_network.cidr",
        "not a valid IPv4 network",
    ),
    "cidr-garbage": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "crete"}),
        FLEET,
        "all",
        "fleet_network.cidr",
        "not a valid IPv4 network",
    ),
    "cidr-too-small": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.0/30"}),
        FLEET,
        "all",
        "fleet_network.cidr",
        "fewer than 8",
    ),
    "gateway-outside": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.0/24", "gateway": "10.42.1.1"}),
        FLEET,
        "all",
        "fleet_network.gateway",
        "not a host address",
    ),
    "gateway-network-address": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.0/24", "gateway": "10.42.0.0"}),
        FLEET,
        "all",
        "fleet_network.gateway",
        "not a host address",
    ),
    "gateway-broadcast": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.0/24", "gateway": "10.42.0.255"}),
        FLEET,
        "all",
        "fleet_network.gateway",
        "not a host address",
    ),
    "gateway-garbage": Bad(
        lambda i: i.set_fleet(fleet_network={"cidr": "10.42.0.0/24", "gateway": "router"}),
        FLEET,
        "all",
        "fleet_network.gateway",
    ),
    "unknown-language": Bad(
        lambda i: i.set_host("hersonissos", language="fr"),
        HOSTS,
        "hersonissos",
        "language",
        "must be one of",
    ),
    "bad-colour": Bad(
        lambda i: i.set_host("hersonissos", branding={"colour": "blue"}),
        HOSTS,
        "hersonissos",
        "branding.colour",
        "must be a colour",
    ),
    "bad-colour-short-hex": Bad(
        lambda i: i.set_host("hersonissos", branding={"colour": "#fff"}),
        HOSTS,
        "hersonissos",
        "branding.colour",
    ),
    "branding-not-a-mapping": Bad(
        lambda i: i.set_host("hersonissos", branding="#112233"),
        HOSTS,
        "hersonissos",
        "branding",
        "must be a mapping",
    ),
    "bad-logo": Bad(
        lambda i: i.set_host("hersonissos", branding={"logo": "javascript:x"}),
        HOSTS,
        "hersonissos",
        "branding.logo",
    ),
    "missing-csv": Bad(
        lambda i: i.set_host("hersonissos", datasets=["council_decisions", "parking_fines"]),
        HOSTS,
        "hersonissos",
        "datasets",
        "missing CSV",
    ),
    "datasets-not-a-list": Bad(
        lambda i: i.set_host("hersonissos", datasets="budget_lines"),
        HOSTS,
        "hersonissos",
        "datasets",
        "must be a list",
    ),
    "fleet-network-not-a-mapping": Bad(
        lambda i: i.set_fleet(fleet_network="10.42.0.0/24"),
        FLEET,
        "all",
        "fleet_network",
        "must be a mapping",
    ),
}

BAD_URIS = {
    "uri-empty": "",
    "uri-not-a-string": 42,
    "uri-wrong-path": "qemu:///foo",
    "uri-extra-path": "qemu:///system/extra",
    "uri-unsupported-scheme": "xen:///system",
    "uri-http": "http://hv01/system",
    "uri-ssh-without-host": "qemu+ssh:///system",
    "uri-tcp-without-host": "qemu+tcp:///session",
    "uri-test-without-path": "test://",
    "uri-no-scheme": "hv01/system",
}
for _id, _uri in BAD_URIS.items():
    BAD_CASES[_id] = Bad(
        lambda i, u=_uri: i.set_hypervisor(libvirt_uri=u),
        HOSTS,
        "hv01",
        "libvirt_uri",
        "not a libvirt URI",
    )
BAD_CASES["uri-in-group-vars"] = Bad(
    lambda i: (
        i.edit(
            i.hosts,
            lambda d: d["all"]["children"]["hypervisors"]["hosts"]["hv01"].pop("libvirt_uri"),
        ),
        i.edit(i.hv_vars, lambda d: d.update(libvirt_uri="qemu+ssh://hv01/sys")),
    ),
    "group_vars/hypervisors.yml",
    "hv01",
    "libvirt_uri",
    "not a libvirt URI",
)


@pytest.mark.parametrize("case_id", list(BAD_CASES))
def test_bad_input_is_reported_with_file_entry_and_field(inv: InventoryCopy, case_id: str) -> None:
    case = BAD_CASES[case_id]
    case.mutate(inv)
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert_one_problem(err.value, inv.root, case)


@pytest.mark.parametrize("which", ["hosts", "group_vars", "host_vars"])
def test_yaml_syntax_error_names_file_and_line(inv: InventoryCopy, which: str) -> None:
    target = {
        "hosts": inv.hosts,
        "group_vars": inv.fleet_vars,
        "host_vars": inv.host_vars_file("hersonissos"),
    }[which]
    good = target.read_text() if target.exists() else "profile: small\nmodules: []\nx: 1\n"
    lines = good.splitlines()
    lines.insert(2, "broken: [unclosed, list")
    lines.insert(3, "another: key")
    target.write_text("\n".join(lines) + "\n")
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert err.value.exit_code == 2
    [problem] = err.value.problems
    assert problem.file == str(target)
    assert "YAML syntax error" in problem.message
    assert "line 4" in problem.message  # PyYAML notices the unclosed list on the next line


def test_host_vars_that_are_not_a_mapping_name_the_file(inv: InventoryCopy) -> None:
    path = inv.host_vars_file("hersonissos")
    path.parent.mkdir(exist_ok=True)
    path.write_text("- just\n- a list\n")
    with pytest.raises(InventoryError) as err:
        inv.load()
    [problem] = err.value.problems
    assert (problem.file, problem.entry) == (str(path), "hersonissos")


def test_missing_inventory_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as err:
        inventory.load(tmp_path / "nowhere")
    assert err.value.exit_code == 2
    assert err.value.problems[0].file == str(tmp_path / "nowhere")


def test_several_problems_are_all_reported(inv: InventoryCopy) -> None:
    inv.set_host("archanes-asterousia", display_name=42)
    inv.set_host("minoa-pediada", ip="10.99.0.1", modules="portal")
    inv.set_host_var_file("hersonissos", mac="nonsense", profile="huge")
    inv.set_profile("medium", vcpus=0)
    inv.set_hypervisor(libvirt_uri="xen:///system")
    with pytest.raises(InventoryError) as err:
        inv.load()
    got = {
        (Path(p.file).relative_to(inv.root).as_posix(), p.entry, p.field)
        for p in err.value.problems
    }
    assert got == {
        (HOSTS, "archanes-asterousia", "display_name"),
        (HOSTS, "minoa-pediada", "ip"),
        (HOSTS, "minoa-pediada", "modules"),
        (HERSO_VARS, "hersonissos", "mac"),
        (HERSO_VARS, "hersonissos", "profile"),
        (FLEET, "all", "vm_profiles.medium.vcpus"),
        (HOSTS, "hv01", "libvirt_uri"),
    }
    assert "7 problem(s)" in err.value.message


def test_validation_changes_nothing(inv: InventoryCopy) -> None:
    inv.set_host("hersonissos", ip="10.42.0.1", display_name="")
    inv.set_host_var_file("minoa-pediada", modules=["blog"])
    before = inv.snapshot()
    with pytest.raises(InventoryError):
        inv.load()
    assert inv.snapshot() == before
    valid = InventoryCopy(inv.root)
    valid.set_host("hersonissos", ip="10.42.0.77", display_name="Δήμος Χερσονήσου")
    valid.set_host_var_file("minoa-pediada", modules=["portal"])
    before = valid.snapshot()
    valid.load()
    assert valid.snapshot() == before


# --------------------------------------------------------------------------- capacity


def _test_driver_capacity(uri: str) -> dict[str, tuple[int, int]]:
    backend = connect(uri)
    try:
        info = backend.host_info()
    finally:
        backend.close()
    return {"hv01": (info.cpus, info.memory_mib)}


def test_test_driver_reports_the_capacity_the_tests_rely_on(inv: InventoryCopy) -> None:
    assert _test_driver_capacity(inv.use_test_driver()) == {"hv01": (16, 3072)}


def test_shipped_sizes_fit_the_test_driver(inv: InventoryCopy) -> None:
    fleet = inv.load()
    assert check_capacity(fleet, _test_driver_capacity(inv.use_test_driver())) == []


@pytest.mark.parametrize("where", ["hosts", "host_vars"])
@pytest.mark.parametrize(
    "size,text",
    [
        ({"vcpus": 17, "memory_mib": 2048}, "large wants 17 vCPUs, hypervisor hv01 has 16"),
        ({"vcpus": 2, "memory_mib": 3073}, "large wants 3073 MiB, hypervisor hv01 has 3072 MiB"),
    ],
    ids=["vcpus", "memory"],
)
def test_sizes_beyond_the_hypervisor(
    inv: InventoryCopy, where: str, size: dict[str, int], text: str
) -> None:
    capacity = _test_driver_capacity(inv.use_test_driver())
    inv.set_profile("large", **size)
    if where == "hosts":
        inv.set_host("hersonissos", profile="large")
        expected_file = inv.hosts
    else:
        inv.set_host_var_file("hersonissos", profile="large")
        expected_file = inv.host_vars_file("hersonissos")
    [problem] = check_capacity(inv.load(), capacity)
    assert (problem.file, problem.entry, problem.field) == (
        str(expected_file),
        "hersonissos",
        "profile",
    )
    assert text in problem.message


def test_exactly_the_hypervisor_size_fits(inv: InventoryCopy) -> None:
    capacity = _test_driver_capacity(inv.use_test_driver())
    inv.set_profile("small", vcpus=16, memory_mib=3072)
    assert check_capacity(inv.load(), capacity) == []


def test_default_profile_beyond_the_hypervisor_names_the_fleet_file(inv: InventoryCopy) -> None:
    capacity = _test_driver_capacity(inv.use_test_driver())
    inv.set_profile("small", memory_mib=4096)
    problems = check_capacity(inv.load(), capacity)
    assert {(p.file, p.entry, p.field) for p in problems} == {
        (str(inv.fleet_vars), s, "profile") for s in SLUGS
    }


def test_yaml_written_by_the_fixture_is_what_ansible_reads(inv: InventoryCopy) -> None:
    """Guard the fixture itself: a mutation lands where the test thinks it does."""
    inv.set_host_var_file("hersonissos", profile="medium")
    data = yaml.safe_load(inv.host_vars_file("hersonissos").read_text())
    assert data == {"profile": "medium"}
    assert inv.load().get("hersonissos").profile.name == "medium"

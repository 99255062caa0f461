"""The provisioning engine against libvirt's own test driver (no mocks).

Each test gets a private test-driver node (`test://<tmp>/node.xml`): `test:///default` is one
state shared by the whole process, so only one read-only test touches it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt
import pytest
from kallikratis import golden, model
from kallikratis.errors import HypervisorError
from kallikratis.hypervisor import connect
from kallikratis.provision import Engine
from support import GREEK, SLUGS, InventoryCopy

NS = {"kk": model.METADATA_NS}
MakeEngine = Callable[[model.Fleet], Engine]


def _quiet(_slug: str, _phase: str) -> None:
    pass


def _up(engine: Engine, names: tuple[str, ...] = ()) -> dict[str, str]:
    selection = engine.fleet.select(names)
    return {r.slug: r.result for r in engine.up(selection, _quiet, wait=False)}


def _plan(engine: Engine) -> dict[str, str]:
    return {it.slug: it.action for it in engine.plan(engine.fleet.municipalities)}


def _uuids(engine: Engine) -> dict[str, str]:
    conn = engine.backend("hv01").conn
    return {d.name(): d.UUIDString() for d in conn.listAllDomains()}


def test_default_test_driver_host_info() -> None:
    backend = connect("test:///default")
    try:
        info = backend.host_info()
    finally:
        backend.close()
    assert (info.cpus, info.memory_mib) == (16, 3072)
    assert info.hostname


def test_fresh_fleet_plans_three_creates(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    assert _plan(engine) == dict.fromkeys(SLUGS, "create")
    assert engine.orphans() == []
    assert engine.capacity() == {"hv01": (16, 3072)}


def test_up_creates_domains_with_metadata(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    assert _up(engine) == dict.fromkeys(SLUGS, "created")
    be = engine.backend("hv01")
    for m in test_fleet.municipalities:
        root = ET.fromstring(be.domain_xml(m.vm_name, inactive=True))
        meta = root.find("./metadata/kk:municipality", NS)
        assert meta is not None
        assert meta.findtext("kk:fleet", namespaces=NS) == "crete"
        assert meta.findtext("kk:slug", namespaces=NS) == m.slug
        assert meta.findtext("kk:display-name", namespaces=NS) == GREEK[m.slug]
        assert root.findtext("title") == GREEK[m.slug]
        spec = engine.spec(m)
        assert meta.findtext("kk:spec-hash", namespaces=NS) == model.spec_hash(spec)
        assert json.loads(meta.findtext("kk:spec", namespaces=NS) or "") == spec
        host_key = engine.keys.host_key(m.slug, create=False)
        assert host_key is not None
        assert meta.findtext("kk:host-key", namespaces=NS) == host_key.public_openssh
        assert meta.findtext("kk:image", namespaces=NS) == engine.recipe().version
        info = be.domain(m.vm_name)
        assert info is not None and info.running and info.slug == m.slug


def test_up_creates_volumes_and_dhcp_reservations(
    test_fleet: model.Fleet, make_engine: MakeEngine
) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    be = engine.backend("hv01")
    pool = be.conn.storagePoolLookupByName("kallikratis")
    golden_vol = f"golden-debian13-{engine.recipe().version}.qcow2"
    golden_path = pool.storageVolLookupByName(golden_vol).path()
    names = {v.name for v in be.volumes("kallikratis")}
    for m in test_fleet.municipalities:
        assert {f"{m.vm_name}.qcow2", f"{m.vm_name}-seed.iso"} <= names
        overlay = ET.fromstring(pool.storageVolLookupByName(f"{m.vm_name}.qcow2").XMLDesc(0))
        assert overlay.findtext("./backingStore/path") == golden_path
        assert overlay.find("./target/format").get("type") == "qcow2"
    assert {golden_vol, golden.marker_name(golden_vol)} <= names
    net = ET.fromstring(be.conn.networkLookupByName("kallikratis-crete").XMLDesc(0))
    hosts = {(h.get("mac"), h.get("name"), h.get("ip")) for h in net.iterfind("./ip/dhcp/host")}
    assert hosts == {(m.mac, m.slug, str(m.ip)) for m in test_fleet.municipalities}


def test_second_up_changes_nothing(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    be = engine.backend("hv01")
    xml_before = {
        m.vm_name: be.domain_xml(m.vm_name, inactive=True) for m in test_fleet.municipalities
    }
    uuids = _uuids(engine)
    again = make_engine(test_fleet)
    assert _up(again) == dict.fromkeys(SLUGS, "unchanged")
    assert _plan(again) == dict.fromkeys(SLUGS, "unchanged")
    assert _uuids(again) == uuids
    assert {n: be.domain_xml(n, inactive=True) for n in xml_before} == xml_before


def test_changed_profile_is_planned_and_applied(
    inv: InventoryCopy, make_engine: MakeEngine
) -> None:
    inv.use_test_driver()
    engine = make_engine(inv.load())
    _up(engine)
    uuids = _uuids(engine)
    inv.set_host("hersonissos", profile="medium")
    changed = make_engine(inv.load())
    [item] = [it for it in changed.plan(changed.fleet.municipalities) if it.action != "unchanged"]
    assert (item.slug, item.action) == ("hersonissos", "change")
    assert dict((k, (a, b)) for k, a, b in item.changes) == {
        "vcpus": (1, 2),
        "memory_mib": (1536, 2048),
        "disk_gib": (10, 20),
    }
    assert item.restart_pending  # it runs: the new size applies on restart
    results = {r.slug: r for r in changed.up(changed.fleet.municipalities, _quiet, wait=False)}
    assert results["hersonissos"].result == "changed"
    assert "restart pending" in results["hersonissos"].detail
    assert {s: r.result for s, r in results.items() if s != "hersonissos"} == {
        "archanes-asterousia": "unchanged",
        "minoa-pediada": "unchanged",
    }
    assert _uuids(changed) == uuids  # redefined in place, not a new domain
    be = changed.backend("hv01")
    inactive = ET.fromstring(be.domain_xml("crete-hersonissos", inactive=True))
    assert inactive.findtext("vcpu") == "2"
    assert _plan(changed)["hersonissos"] == "unchanged"
    [row] = [r for r in changed.status() if r.slug == "hersonissos"]
    assert row.drift == ("restart pending",)


def test_status_rows(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    before = {r.slug: r for r in engine.status()}
    assert {s: (r.state, r.drift) for s, r in before.items()} == dict.fromkeys(
        SLUGS, ("absent", ("not created",))
    )
    _up(engine, ("hersonissos",))
    rows = {r.slug: r for r in engine.status()}
    herso = rows["hersonissos"]
    m = test_fleet.get("hersonissos")
    assert (herso.state, herso.ip, herso.drift) == ("running", str(m.ip), ())
    assert herso.modules == ("portal", "opendata", "education")
    assert herso.display_name == GREEK["hersonissos"]
    assert herso.domain == "hersonissos.crete.kallikratis.test"
    assert herso.image == engine.recipe().version
    assert herso.uptime_s is not None and herso.uptime_s >= 0
    assert rows["minoa-pediada"].state == "absent"


def test_status_shows_drift(inv: InventoryCopy, make_engine: MakeEngine) -> None:
    inv.use_test_driver()
    _up(make_engine(inv.load()))
    inv.set_host("minoa-pediada", ip="10.42.0.222")
    rows = {r.slug: r for r in make_engine(inv.load()).status()}
    assert rows["minoa-pediada"].drift[0].startswith("ip: ")
    assert "'10.42.0.222'" in rows["minoa-pediada"].drift[0]
    assert rows["hersonissos"].drift == ()


def test_removed_entry_is_an_orphan(inv: InventoryCopy, make_engine: MakeEngine) -> None:
    inv.use_test_driver()
    _up(make_engine(inv.load()))
    inv.remove_host("minoa-pediada")
    engine = make_engine(inv.load())
    assert [(o.slug, o.action) for o in engine.orphans()] == [("minoa-pediada", "orphan")]
    assert set(_plan(engine)) == {"archanes-asterousia", "hersonissos"}
    rows = {r.slug: r for r in engine.status()}
    assert rows["minoa-pediada"].drift == ("orphan: not in inventory",)
    [result] = engine.destroy(["minoa-pediada"], _quiet)
    assert result.result == "destroyed"
    assert engine.orphans() == []
    names = {v.name for v in engine.backend("hv01").volumes("kallikratis")}
    assert not any(n.startswith("crete-minoa-pediada") for n in names)


def test_destroy_removes_everything_but_the_golden_image(
    test_fleet: model.Fleet, make_engine: MakeEngine
) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    be = engine.backend("hv01")
    m = test_fleet.get("hersonissos")
    key_file = engine.keys.dir / "host-keys" / "hersonissos.vault"
    assert key_file.exists()
    assert str(m.ip) in engine.keys.known_hosts.read_text()
    [result] = engine.destroy(["hersonissos"], _quiet)
    assert result.result == "destroyed"
    assert be.domain(m.vm_name) is None
    names = {v.name for v in be.volumes("kallikratis")}
    assert not {f"{m.vm_name}.qcow2", f"{m.vm_name}-seed.iso"} & names
    golden_vol = f"golden-debian13-{engine.recipe().version}.qcow2"
    assert {golden_vol, golden.marker_name(golden_vol)} <= names
    assert m.mac not in be.dhcp_hosts("kallikratis-crete")
    assert not key_file.exists()
    assert str(m.ip) not in engine.keys.known_hosts.read_text()
    assert _plan(engine) == {**dict.fromkeys(SLUGS, "unchanged"), "hersonissos": "create"}
    [again] = engine.destroy(["hersonissos"], _quiet)
    assert again.result == "absent"


def test_destroy_refuses_a_domain_without_our_metadata(
    test_fleet: model.Fleet, make_engine: MakeEngine
) -> None:
    engine = make_engine(test_fleet)
    be = engine.backend("hv01")
    be.conn.defineXML(
        "<domain type='test'><name>crete-hersonissos</name>"
        "<memory unit='MiB'>128</memory><os><type>hvm</type></os></domain>"
    )
    assert _plan(engine)["hersonissos"] == "create"  # not ours: invisible to plan
    [result] = engine.destroy(["hersonissos"], _quiet)
    assert result.result == "failed"
    assert "no Kallikratis metadata" in result.detail
    assert be.conn.lookupByName("crete-hersonissos").name() == "crete-hersonissos"
    with pytest.raises(HypervisorError):
        be.remove_domain("crete-hersonissos")


def test_host_keys_are_vault_encrypted(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    files = sorted((engine.keys.dir / "host-keys").iterdir())
    assert [f.name for f in files] == sorted(f"{s}.vault" for s in SLUGS)
    for f in files:
        text = f.read_text()
        assert text.startswith("$ANSIBLE_VAULT;")
        assert "PRIVATE KEY" not in text
        assert f.stat().st_mode & 0o077 == 0
    pair = engine.keys.host_key("hersonissos", create=False)
    assert pair is not None and "PRIVATE KEY" in pair.private_openssh


def test_known_hosts_lines_are_plain_ip_and_key(
    test_fleet: model.Fleet, make_engine: MakeEngine
) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    lines = engine.keys.known_hosts.read_text().splitlines()
    expected = set()
    for m in test_fleet.municipalities:
        pair = engine.keys.host_key(m.slug, create=False)
        assert pair is not None
        expected.add(f"{m.ip} ssh-ed25519 {pair.public_openssh.split()[1]} {m.slug}")
    assert set(lines) == expected
    assert not any("[" in line for line in lines)


def test_second_up_keeps_host_keys(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    known = engine.keys.known_hosts.read_text()
    _up(make_engine(test_fleet))
    assert engine.keys.known_hosts.read_text() == known


def test_stopped_domain_is_started(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    engine = make_engine(test_fleet)
    _up(engine)
    be = engine.backend("hv01")
    be.conn.lookupByName("crete-minoa-pediada").destroy()
    assert be.domain("crete-minoa-pediada").state == "shut off"
    results = _up(engine)
    assert results["minoa-pediada"] == "started"
    assert be.conn.lookupByName("crete-minoa-pediada").state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_large_fleet_of_332_municipalities(inv: InventoryCopy, make_engine: MakeEngine) -> None:
    inv.use_test_driver()
    inv.set_fleet(
        fleet_network={
            "name": "kallikratis-crete",
            "mode": "nat",
            "cidr": "10.42.0.0/22",
            "gateway": "10.42.0.1",
        }
    )
    inv.add_many(332 - 3)
    fleet = inv.load()
    assert len(fleet.municipalities) == 332
    ips = [m.ip for m in fleet.municipalities]
    assert len(set(ips)) == 332
    assert len({m.mac for m in fleet.municipalities}) == 332
    assert all(ip in fleet.network.cidr for ip in ips)
    engine = make_engine(fleet)
    assert _plan(engine) == {m.slug: "create" for m in fleet.municipalities}


def test_destroy_when_the_network_is_gone(test_fleet: model.Fleet, make_engine: MakeEngine) -> None:
    """A fleet whose libvirt network was removed (or never made) can still be destroyed."""
    engine = make_engine(test_fleet)
    assert not engine.backend("hv01").network_exists(test_fleet.network.name)
    results = engine.destroy([m.slug for m in engine.fleet.municipalities], lambda *_: None)
    assert {r.result for r in results} == {"absent"}, results


def test_vm_and_volume_names_are_defined_once_and_reversible(test_fleet: model.Fleet) -> None:
    m = test_fleet.get("hersonissos")
    assert m.vm_name == model.vm_name(test_fleet.name, "hersonissos") == "crete-hersonissos"
    assert (m.disk_volume, m.seed_volume) == model.volume_names(m.vm_name)
    assert (m.disk_volume, m.seed_volume) == (
        "crete-hersonissos.qcow2",
        "crete-hersonissos-seed.iso",
    )
    for name in (m.vm_name, m.disk_volume, m.seed_volume):
        assert model.slug_of(test_fleet.name, name) == "hersonissos"
    assert model.slug_of(test_fleet.name, "golden-debian13-0123456789ab.qcow2") is None
    assert model.slug_of("other", m.disk_volume) is None

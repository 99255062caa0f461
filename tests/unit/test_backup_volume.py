"""control's own volume for the backup store (issue 11: "its own volume").

`up` gives a control VM a second qcow2 disk (serial kk-backups), `destroy` removes it with the
others, roles/backupstore mounts it on /srv/backups, verify checks that it is mounted. Against
libvirt's test driver (no mocks) and the inventory's own validation.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from kallikratis import model, stackvars, verify
from kallikratis.errors import InventoryError
from kallikratis.paths import StateDir
from kallikratis.provision import Engine
from support import HOSTS, SLUGS, Bad, InventoryCopy, assert_one_problem

MakeEngine = Callable[[model.Fleet], Engine]


def _quiet(_slug: str, _phase: str) -> None:
    pass


def _data_disks(engine: Engine, m: model.Municipality) -> list[ET.Element]:
    dom = engine.backend(m.hypervisor).conn.lookupByName(m.vm_name)
    disks = ET.fromstring(dom.XMLDesc()).findall("./devices/disk")
    return [d for d in disks if d.findtext("serial") == model.DATA_SERIAL]


def test_control_has_a_volume_of_its_own_and_nobody_else(inv: InventoryCopy) -> None:
    inv.add_central()
    fleet = inv.load()
    control = fleet.get("control")
    assert control.backup_volume_gib == 50
    assert control.data_volume == "crete-control-backups.qcow2"
    assert model.slug_of(fleet.name, control.data_volume) == "control"
    assert model.vm_spec(fleet, control, "")["backup_volume_gib"] == 50
    for slug in SLUGS:
        m = fleet.get(slug)
        assert (m.backup_volume_gib, m.data_volume) == (0, "")
        assert "backup_volume_gib" not in model.vm_spec(fleet, m, "")


def test_up_attaches_it_and_destroy_removes_it(inv: InventoryCopy, make_engine: MakeEngine) -> None:
    inv.use_test_driver()
    inv.add_central(backup_volume_gib=8)
    engine = make_engine(inv.load())
    results = engine.up(engine.fleet.municipalities, _quiet, wait=False)
    assert {r.result for r in results} == {"created"}
    control = engine.fleet.get("control")
    be = engine.backend(control.hypervisor)
    [vol] = [v for v in be.volumes("kallikratis") if v.name == control.data_volume]
    assert vol.capacity_bytes == 8 * 1024**3
    [disk] = _data_disks(engine, control)
    assert disk.find("target").get("dev") == "vdc"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # snapshots of control hold it too
    for slug in SLUGS:
        assert _data_disks(engine, engine.fleet.get(slug)) == []
    # a second `up` changes nothing; a lost volume is made again (empty: the role formats it)
    assert {r.result for r in engine.up(engine.fleet.municipalities, _quiet, wait=False)} == {
        "unchanged"
    }
    be.delete_volume("kallikratis", control.data_volume)
    [again] = engine.up([control], _quiet, wait=False)
    assert again.result == "changed" and be.volume("kallikratis", control.data_volume)
    [gone] = engine.destroy(["control"], _quiet)
    assert gone.result == "destroyed"
    assert not [v for v in be.volumes("kallikratis") if v.name.startswith(control.vm_name)]


def test_a_new_size_is_planned_as_a_change(inv: InventoryCopy, make_engine: MakeEngine) -> None:
    inv.use_test_driver()
    inv.add_central()
    engine = make_engine(inv.load())
    engine.up(engine.fleet.municipalities, _quiet, wait=False)
    inv.add_central(backup_volume_gib=80)
    engine = make_engine(inv.load())
    [item] = [it for it in engine.plan(engine.fleet.municipalities) if it.slug == "control"]
    assert item.action == "change"
    assert ("backup_volume_gib", 50, 80) in item.changes


def test_the_role_and_verify_learn_the_volume(inv: InventoryCopy, state_dir: Path) -> None:
    inv.add_central()
    fleet = inv.load()
    mine = StateDir(state_dir).fleet(fleet.name)
    control = stackvars.backup_vars(fleet, fleet.get("control"), mine)
    assert control["kallikratis_backup_volume_serial"] == model.DATA_SERIAL
    assert "kallikratis_backup_volume_serial" not in stackvars.backup_vars(
        fleet, fleet.get("hersonissos"), mine
    )
    spec = verify.write_spec(fleet, list(fleet.municipalities), state_dir, run="unit")
    data = json.loads(spec.read_text())
    assert data["control"]["backup_volume_label"] == model.DATA_SERIAL
    assert data["hersonissos"]["backup_volume_label"] == ""


BAD = [
    Bad(
        lambda i: i.add_central(backup_volume_gib=0),
        HOSTS,
        "control",
        "backup_volume_gib",
        "between 1 and 65536",
    ),
    Bad(
        lambda i: i.add_central(backup_volume_gib="50G"),
        HOSTS,
        "control",
        "backup_volume_gib",
        "whole number of GiB",
    ),
    Bad(
        lambda i: i.set_host("hersonissos", backup_volume_gib=20),
        HOSTS,
        "hersonissos",
        "backup_volume_gib",
        "only the control VM",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: f"{c.entry}-{c.text[:20]}")
def test_bad_volume_sizes_are_refused(inv: InventoryCopy, case: Bad) -> None:
    case.mutate(inv)
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert_one_problem(err.value, inv.root, case)

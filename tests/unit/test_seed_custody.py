"""The VM's SSH host private key leaves the NoCloud seed once the VM has booted with it.

The test driver keeps no volume contents, so the backend here records what is uploaded (the
bytes `up` would put in the pool) on top of the real test driver: domains, volumes, metadata
and their XML stay libvirt's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import yaml
from kallikratis import model, seedcustody
from kallikratis.documents import VmKeys, compose
from kallikratis.hypervisor import LibvirtBackend
from kallikratis.provision import Engine
from support import InventoryCopy


class RecordingBackend(LibvirtBackend):
    """The test driver, plus the contents of every volume uploaded into (written in place)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri, libvirt.open(uri))
        self.data: dict[str, bytes] = {}

    def upload(self, pool, name, source, progress=None):  # type: ignore[no-untyped-def]
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
        old = self.data.get(name, b"")
        self.data[name] = raw + old[len(raw) :]

    def delete_volume(self, pool: str, name: str) -> bool:
        self.data.pop(name, None)
        return super().delete_volume(pool, name)


@pytest.fixture
def engine(
    test_fleet: model.Fleet, tmp_path: Path, state_dir: Path, vault_password: Path
) -> Iterator[Engine]:
    backends: dict[str, RecordingBackend] = {}

    def factory(uri: str) -> RecordingBackend:
        backends.setdefault(uri, RecordingBackend(uri))
        return backends[uri]

    yield Engine(
        test_fleet, state_dir=state_dir, image_cache=tmp_path / "cache", backend_factory=factory
    )
    for be in backends.values():
        be.close()


def _quiet(_slug: str, _phase: str) -> None:
    pass


def _key_lines(engine: Engine, slug: str) -> list[str]:
    """The base64 lines of the host's private key (each appears as is in the seed's YAML)."""
    pair = engine.keys.host_key(slug, create=False)
    assert pair is not None
    return [line for line in pair.private_openssh.splitlines() if "PRIVATE KEY" not in line]


def _pool_holds_key(engine: Engine, slug: str) -> bool:
    be = engine.backend("hv01")
    assert isinstance(be, RecordingBackend)
    blob = b"".join(be.data.values())
    return any(line.encode() in blob for line in _key_lines(engine, slug))


def _up(engine: Engine) -> dict[str, str]:
    return {r.slug: r.result for r in engine.up(engine.fleet.municipalities, _quiet, wait=False)}


def test_boot_confirmed_removes_the_private_key_from_the_pool(engine: Engine) -> None:
    assert set(_up(engine).values()) == {"created"}
    for m in engine.fleet.municipalities:
        assert _pool_holds_key(engine, m.slug), "the first boot needs the key in the seed"
    for m in engine.fleet.municipalities:
        assert seedcustody.retire(engine, m) is True
    for m in engine.fleet.municipalities:
        assert not _pool_holds_key(engine, m.slug), m.slug
        dom = engine.backend("hv01").domain(m.vm_name)
        assert dom is not None and dom.seed_retired
    assert {it.action for it in engine.plan(engine.fleet.municipalities)} == {"unchanged"}
    assert set(_up(engine).values()) == {"unchanged"}, "a second up is a no-op"
    for m in engine.fleet.municipalities:
        assert not _pool_holds_key(engine, m.slug), "a later up brought the key back"
        assert seedcustody.retire(engine, m) is False, "retiring twice changes nothing"


def test_retired_seed_keeps_the_instance_and_the_keys(engine: Engine) -> None:
    m = engine.fleet.get("hersonissos")
    pair = engine.keys.host_key(m.slug)
    assert pair is not None
    keys = VmKeys(pair, engine.keys.ensure_client_key())
    first = compose(engine.fleet, m, keys, "v1")
    retired = compose(engine.fleet, m, keys, "v1", retired=True)
    # same instance-id: a reboot with the retired seed is no new instance for cloud-init
    assert (
        yaml.safe_load(first.seed.meta_data)["instance-id"]
        == yaml.safe_load(retired.seed.meta_data)["instance-id"]
    )
    data = yaml.safe_load(retired.seed.user_data.split("\n", 1)[1])
    assert "ssh_keys" not in data
    assert data["ssh_deletekeys"] is False and data["ssh_genkeytypes"] == ["ed25519"]
    assert "PRIVATE" not in retired.seed.user_data
    assert first.spec_hash == retired.spec_hash
    # rotating the automation key changes no retired seed (the VM gets the key over SSH)
    rotated = compose(
        engine.fleet, m, VmKeys(pair, "ssh-ed25519 AAAAnew rotated"), "v1", retired=True
    )
    assert rotated.seed_hash == retired.seed_hash


def test_a_spec_change_after_retirement_writes_a_retired_seed(
    engine: Engine, inv: InventoryCopy
) -> None:
    _up(engine)
    for m in engine.fleet.municipalities:
        seedcustody.retire(engine, m)
    inv.set_profile("small", memory_mib=1024)
    fleet = inv.load()
    engine2 = Engine(
        fleet,
        state_dir=engine.state_dir,
        image_cache=engine.image_cache,
        backend_factory=lambda _uri: engine.backend("hv01"),
    )
    results = {r.slug: r.result for r in engine2.up(fleet.municipalities, _quiet, wait=False)}
    assert set(results.values()) == {"changed"}
    for m in fleet.municipalities:
        assert not _pool_holds_key(engine2, m.slug), m.slug
        dom = engine2.backend("hv01").domain(m.vm_name)
        assert dom is not None and dom.seed_retired


def test_a_vm_that_lost_its_disk_gets_the_key_again(engine: Engine) -> None:
    _up(engine)
    m = engine.fleet.get("hersonissos")
    seedcustody.retire(engine, m)
    be = engine.backend("hv01")
    be.stop_domain(m.vm_name, timeout=1)
    be.delete_volume(engine.fleet.pool.name, m.disk_volume)
    assert _up(engine)["hersonissos"] in ("changed", "started", "created")
    assert _pool_holds_key(engine, m.slug), "a new disk boots for the first time: it needs the key"
    dom = be.domain(m.vm_name)
    assert dom is not None and not dom.seed_retired

"""What a municipality's VM owns in libvirt besides its domain: disk, seed volume, DHCP reservation.

Names come from the model (:attr:`~kallikratis.model.Municipality.disk_volume` and friends);
every function is idempotent and says whether it changed something where that matters.
"""

from __future__ import annotations

from kallikratis import model, render
from kallikratis.hypervisor import DhcpHost, LibvirtBackend
from kallikratis.seed import Seed


def reservation(m: model.Municipality) -> DhcpHost:
    return DhcpHost(m.mac, m.slug, str(m.ip))


def reserve_address(
    be: LibvirtBackend, fleet: model.Fleet, m: model.Municipality, present: bool
) -> bool:
    """Add or remove the DHCP reservation (libvirt-managed networks only); True if changed."""
    if not fleet.network.managed:
        return False
    return be.set_dhcp_host(fleet.network.name, reservation(m), present)


def write_seed(be: LibvirtBackend, fleet: model.Fleet, m: model.Municipality, seed: Seed) -> None:
    """Write the NoCloud ISO of *seed* into the seed volume.

    An existing volume large enough is overwritten in place, every byte of it (zeros after the
    ISO): the previous seed may hold a host's private key, which must be gone from the pool's
    storage, not merely unlinked (a running VM's QEMU keeps an unlinked file's blocks alive).
    """
    pool = fleet.pool.name
    data = seed.iso()
    current = be.volume(pool, m.seed_volume)
    if current is not None and current.capacity_bytes >= len(data):
        be.upload(pool, m.seed_volume, data + bytes(current.capacity_bytes - len(data)))
        return
    be.delete_volume(pool, m.seed_volume)
    be.create_volume(
        pool,
        render.render("raw-volume.xml.j2", name=m.seed_volume, capacity=len(data), format="raw"),
    )
    be.upload(pool, m.seed_volume, data)


def create_disk(
    be: LibvirtBackend, fleet: model.Fleet, m: model.Municipality, backing_path: str
) -> None:
    """The VM's copy-on-write overlay on the golden image at *backing_path*."""
    be.create_volume(
        fleet.pool.name,
        render.render(
            "overlay.xml.j2",
            name=m.disk_volume,
            capacity_gib=m.profile.disk_gib,
            backing_path=backing_path,
        ),
    )


def create_data_disk(be: LibvirtBackend, fleet: model.Fleet, m: model.Municipality) -> None:
    """control's empty backup-store volume (qcow2, so that its snapshots hold it too)."""
    be.create_volume(
        fleet.pool.name,
        render.render(
            "raw-volume.xml.j2",
            name=m.data_volume,
            capacity=m.backup_volume_gib * 1024**3,
            format="qcow2",
        ),
    )


def remove_volumes(be: LibvirtBackend, fleet: model.Fleet, vm_name: str) -> bool:
    """Delete the disk, seed and data volumes of *vm_name*; True when any existed."""
    removed = False
    for vol in (*model.volume_names(vm_name), model.data_volume_name(vm_name)):
        removed = be.delete_volume(fleet.pool.name, vol) or removed
    return removed

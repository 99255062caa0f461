"""Domain snapshots: the safety net of a patch run.

On a running qcow2 domain a snapshot is an *internal system checkpoint*: disk and memory
together, so the guest comes back exactly as it was (services, open files, page cache) and
no filesystem freeze is needed to make it consistent. Disks marked ``snapshot="no"`` (the
read-only cloud-init seed) are left out. Only snapshots named with :data:`PREFIX` are ours.

:class:`Snapshots` is part of :class:`~kallikratis.hypervisor.LibvirtBackend` (a mixin, so the
backend module stays readable): call ``backend.create_snapshot(...)`` and so on.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import libvirt

from kallikratis.errors import HypervisorError
from kallikratis.hypervisor.base import SnapshotInfo
from kallikratis.hypervisor.libvirt_calls import connection_lost, errors, or_none
from kallikratis.hypervisor.reconnect import Reconnecting, idempotent, once

PREFIX = "kk-patch-"


def _info(snap: libvirt.virDomainSnapshot) -> SnapshotInfo:
    root = ET.fromstring(snap.getXMLDesc(0))
    return SnapshotInfo(
        name=snap.getName(),
        created=int(root.findtext("creationTime") or 0),
        state=root.findtext("state") or "",
        description=root.findtext("description") or "",
        current=bool(snap.isCurrent()),
    )


class Snapshots(Reconnecting):
    """Snapshot methods of the libvirt backend (needs its ``uri`` and ``conn``).

    A revert is retried after a reconnect: reverting to the same snapshot again leads to the
    same state whatever the first attempt did (nothing, all of it, or half of it when libvirtd
    died during the memory load), because the snapshot's disk and memory replace the
    domain's. Creating one is not retried (it may exist already).
    """

    @idempotent
    def list_snapshots(self, domain: str) -> list[SnapshotInfo]:
        """Our snapshots of *domain*, oldest first."""
        with errors(f"listing snapshots of {domain}"):
            dom = self.conn.lookupByName(domain)
            ours = [_info(s) for s in dom.listAllSnapshots() if s.getName().startswith(PREFIX)]
        return sorted(ours, key=lambda s: (s.created, s.name))

    @once
    def create_snapshot(self, domain: str, name: str, description: str) -> SnapshotInfo:
        if not name.startswith(PREFIX):
            raise HypervisorError(f"snapshot name must start with {PREFIX}: {name!r}")
        xml = (
            f"<domainsnapshot><name>{escape(name)}</name>"
            f"<description>{escape(description)}</description></domainsnapshot>"
        )
        with errors(f"snapshotting {domain}"):
            dom = self.conn.lookupByName(domain)
            return _info(dom.snapshotCreateXML(xml, 0))

    @idempotent
    def revert_snapshot(self, domain: str, name: str) -> None:
        """Go back to *name* and leave the domain running (also when it was shut off or crashed)."""
        with errors(f"reverting {domain} to {name}"):
            dom = self.conn.lookupByName(domain)
            snap = dom.snapshotLookupByName(name, 0)
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
            try:
                dom.revertToSnapshot(snap, flags)
            except libvirt.libvirtError as exc:
                # a crashed or paused domain may need FORCE to leave its current state behind
                if exc.get_error_code() != libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY:
                    raise
                dom.revertToSnapshot(snap, flags | libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)

    @idempotent
    def delete_snapshot(self, domain: str, name: str) -> bool:
        """Delete one of our snapshots; False when it does not exist."""
        with errors(f"deleting snapshot {name} of {domain}"):
            dom = self.conn.lookupByName(domain)
            snap = or_none(
                lambda: dom.snapshotLookupByName(name, 0), libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT
            )
            if snap is None:
                return False
            snap.delete(0)
            return True

    def prune_snapshots(self, domain: str, keep: int) -> list[str]:
        """Delete our oldest snapshots so that at most *keep* remain; the names deleted."""
        ours = self.list_snapshots(domain)
        doomed = ours[: max(0, len(ours) - keep)]
        for snap in doomed:
            self.delete_snapshot(domain, snap.name)
        return [s.name for s in doomed]

    @idempotent
    def sync_guest_clock(self, domain: str, attempts: int = 10) -> bool:
        """After a memory revert the guest's clock is the snapshot's: set it from ours.

        Uses the QEMU guest agent; False when the agent did not answer (the caller may fall
        back to setting the time over SSH).
        """
        with errors(f"setting the clock of {domain}"):
            dom = self.conn.lookupByName(domain)
            for _ in range(attempts):
                now = time.time()
                try:
                    dom.setTime({"seconds": int(now), "nseconds": int((now % 1) * 1e9)}, 0)
                    return True
                except libvirt.libvirtError as exc:
                    if connection_lost(exc):
                        raise  # reconnect and try again
                    # qemu-ga sets the system clock, then runs hwclock; an image without
                    # hwclock (util-linux-extra) reports an error although the clock is set
                    if "hwclock" in (exc.get_error_message() or ""):
                        return True
                    time.sleep(1.0)
        return False

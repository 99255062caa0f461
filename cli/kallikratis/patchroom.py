"""Room for a memory snapshot, checked before a patch run touches a VM.

An internal snapshot of a running qcow2 VM is written into the VM's own disk image, in its
storage pool, and keeps growing while the patch runs:

- the memory state: up to the domain's maximum memory (QEMU saves it uncompressed);
- the overlay growth: every disk cluster rewritten after the snapshot (packages, logs, the
  database) is copied on write. Estimated as 10 % of the disk's virtual size, at least 1 GiB
  (a dist-upgrade with a new kernel and the stack deploy rewrite a few hundred MiB here);
- a margin of 1 GiB, so that the pool never fills up: a full pool pauses every VM in it.

    need(pool) = max memory (first disk's pool only)
               + sum over the VM's disks in the pool of max(1 GiB, 10 % of their capacity)
               + 1 GiB

A VM is refused (untouched, with the numbers in the reason) when the pool's available bytes,
less what the other VMs of the same wave have claimed, are below that; the others go on.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from kallikratis import model
from kallikratis.hypervisor import BackendFactory

GIB = 1 << 30
OVERLAY_FRACTION = 0.10
OVERLAY_MIN = GIB
MARGIN = GIB


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def overlay_estimate(capacity: int) -> int:
    return max(OVERLAY_MIN, int(capacity * OVERLAY_FRACTION))


class Room:
    """Claims on the pools of one wave (reset at each wave: by the next one, what the
    snapshots of this one took is on disk and in the pool's available bytes)."""

    def __init__(self, backend: BackendFactory) -> None:
        self.backend = backend
        self._claimed: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._claimed.clear()

    def claim(self, m: model.Municipality) -> str:
        """ "" when the snapshot fits (and its room is claimed), else why it does not."""
        be = self.backend(m.hypervisor)
        disks = be.snapshot_disks(m.vm_name)
        if not disks:
            return ""  # nothing in a pool: nothing to check
        need: dict[str, int] = defaultdict(int)
        need[disks[0].pool] += be.domain_memory(m.vm_name)
        for d in disks:
            need[d.pool] += overlay_estimate(d.capacity_bytes)
        with self._lock:
            for pool, bytes_ in need.items():
                _capacity, available = be.pool_space(pool)
                others = self._claimed[(m.hypervisor, pool)]
                if available - others < bytes_ + MARGIN:
                    return (
                        f"refused before any change: not enough room in storage pool {pool} on "
                        f"{m.hypervisor} for a memory snapshot: needs {gib(bytes_ + MARGIN)} "
                        f"(memory + {OVERLAY_FRACTION:.0%} of the disk, at least 1 GiB, for "
                        f"changes + 1 GiB margin), {gib(available)} available"
                        + (f", {gib(others)} of it claimed by this wave" if others else "")
                        + "; free space in the pool or delete old kk-patch- snapshots"
                    )
            for pool, bytes_ in need.items():
                self._claimed[(m.hypervisor, pool)] += bytes_ + MARGIN
        return ""

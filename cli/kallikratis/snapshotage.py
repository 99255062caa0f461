"""Pre-patch snapshots past ``patch_snapshot_max_age`` are deleted.

A memory snapshot holds what was in the VM's RAM (sessions, form contents: personal data),
so it is not kept for ever, however many ``patch_keep_snapshots`` allows. Only snapshots
named by Kallikratis (``kk-patch-...``, :data:`~kallikratis.hypervisor.SNAPSHOT_PREFIX`) are
ever looked at; a snapshot someone made by hand under another name is never touched.

Called at the start and the end of every patch run (for the municipalities it holds) and by
``kallikratis snapshots prune``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from kallikratis import model
from kallikratis.errors import KallikratisError
from kallikratis.hypervisor import BackendFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    slug: str
    snapshot: str
    age_seconds: int
    result: str  # deleted | expired (dry run) | failed: ...


def prune_expired(
    backend: BackendFactory,
    members: Iterable[model.Municipality],
    now: float,
    *,
    dry_run: bool = False,
    spare: str = "",
) -> list[Pruned]:
    """Delete (or with *dry_run* only list) each member's snapshots older than its
    ``patch_snapshot_max_age``; never one whose name ends with *spare* (the running
    patch run's own, e.g. ``-r42``). A VM that does not exist has none."""
    out = []
    for m in members:
        be = backend(m.hypervisor)
        try:
            if be.domain(m.vm_name) is None:
                continue
            snaps = be.list_snapshots(m.vm_name)
        except KallikratisError as exc:
            out.append(Pruned(m.slug, "", 0, f"failed: {exc.message}"))
            continue
        for snap in snaps:
            age = int(now - snap.created)
            if age <= m.patch_snapshot_max_age or (spare and snap.name.endswith(spare)):
                continue
            result = "expired"
            if not dry_run:
                try:
                    be.delete_snapshot(m.vm_name, snap.name)
                    result = "deleted"
                except KallikratisError as exc:
                    result = f"failed: {exc.message}"
                    log.warning("%s: deleting %s: %s", m.slug, snap.name, exc.message)
            out.append(Pruned(m.slug, snap.name, age, result))
    return out

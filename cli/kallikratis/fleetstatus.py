"""`status`: the fleet as libvirt sees it, each VM's drift from the inventory, the orphans.

Read-only: what :class:`kallikratis.provision.Engine` found (its live domains and orphans) is
turned into rows here; nothing is asked of libvirt a second time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kallikratis import model
from kallikratis.hypervisor import DomainInfo


class Orphan(Protocol):
    """A domain of this fleet not in the inventory (provision.PlanItem)."""

    @property
    def slug(self) -> str: ...
    @property
    def hypervisor(self) -> str: ...
    @property
    def state(self) -> str: ...


@dataclass(frozen=True)
class StatusRow:
    slug: str
    display_name: str
    hypervisor: str
    state: str
    ip: str
    domain: str
    modules: tuple[str, ...]
    image: str
    uptime_s: float | None
    drift: tuple[str, ...] = field(default_factory=tuple)
    #: what a central VM runs (inventory group `central`); () for a municipality
    central_roles: tuple[str, ...] = ()


def diff_spec(old: dict[str, Any], new: dict[str, Any]) -> tuple[tuple[str, Any, Any], ...]:
    keys = sorted(set(old) | set(new))
    return tuple((k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))


def rows(
    fleet: model.Fleet,
    live: Mapping[str, Mapping[str, DomainInfo]],
    spec: Callable[[model.Municipality], dict[str, Any]],
    orphans: Iterable[Orphan],
) -> list[StatusRow]:
    """One row per VM of *fleet* (absent ones too) and per orphan; *live*: hypervisor ->
    slug -> its domain; *spec*: what the inventory wants of a VM."""
    out = []
    now = time.time()
    for m in fleet.municipalities:
        dom = live[m.hypervisor].get(m.slug)
        if dom is None:
            out.append(
                StatusRow(
                    m.slug,
                    m.display_name,
                    m.hypervisor,
                    "absent",
                    str(m.ip),
                    m.domain,
                    m.modules,
                    "",
                    None,
                    ("not created",),
                )
            )
            continue
        drift = [f"{k}: {a!r} -> {b!r}" for k, a, b in diff_spec(dom.spec, spec(m))]
        if dom.running and dom.live_spec_hash and dom.live_spec_hash != dom.spec_hash:
            drift.append("restart pending")
        uptime = now - dom.started if dom.running and dom.started else None
        out.append(
            StatusRow(
                m.slug,
                m.display_name,
                m.hypervisor,
                dom.state,
                str(m.ip),
                m.domain,
                m.modules,
                dom.image,
                uptime,
                tuple(drift),
            )
        )
    for o in orphans:
        out.append(
            StatusRow(
                o.slug,
                "",
                o.hypervisor,
                o.state,
                "",
                "",
                (),
                "",
                None,
                ("orphan: not in inventory",),
            )
        )
    central = {m.slug: m.central_roles for m in fleet.central}
    return [dataclasses.replace(r, central_roles=central.get(r.slug, ())) for r in out]

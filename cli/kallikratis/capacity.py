"""What each hypervisor can hold, measured where it can be: validating an inventory must not
need a running libvirtd (a laptop reviewing it has none)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kallikratis import model
from kallikratis.errors import HypervisorError, InventoryError, Problem
from kallikratis.hypervisor import LibvirtBackend


@dataclass(frozen=True)
class Capacity:
    #: hypervisor -> (cpus, memory_mib), for those that answered
    measured: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: hypervisor -> why it could not be asked (its URI and libvirt's message)
    unreachable: dict[str, str] = field(default_factory=dict)


def measure(fleet: model.Fleet, backend: Callable[[str], LibvirtBackend]) -> Capacity:
    """Ask every hypervisor of *fleet*; *backend* maps a hypervisor name to a connection."""
    out = Capacity()
    for name, hv in fleet.hypervisors.items():
        try:
            info = backend(name).host_info()
        except HypervisorError as exc:
            why = exc.message if hv.uri in exc.message else f"{hv.uri}: {exc.message}"
            out.unreachable[name] = f"hypervisor unreachable: {why}"
            continue
        out.measured[name] = (info.cpus, info.memory_mib)
    return out


def check_capacity(fleet: model.Fleet, capacity: Mapping[str, tuple[int, int]]) -> list[Problem]:
    """Problems for VM sizes beyond what a hypervisor has. capacity: name -> (cpus, memory_mib)."""
    problems = []
    for m in fleet.municipalities:
        if m.hypervisor not in capacity:
            continue
        cpus, mem = capacity[m.hypervisor]
        where = (
            m.origin.get("profile")
            or m.origin.get("default_profile")
            or m.origin.get("vm_profiles")
            or str(fleet.inventory)
        )
        if m.profile.vcpus > cpus:
            problems.append(
                Problem(
                    where,
                    m.slug,
                    "profile",
                    f"{m.profile.name} wants {m.profile.vcpus} vCPUs, "
                    f"hypervisor {m.hypervisor} has {cpus}",
                )
            )
        if m.profile.memory_mib > mem:
            problems.append(
                Problem(
                    where,
                    m.slug,
                    "profile",
                    f"{m.profile.name} wants {m.profile.memory_mib} MiB, "
                    f"hypervisor {m.hypervisor} has {mem} MiB",
                )
            )
    return problems


def require_capacity(fleet: model.Fleet, capacity: Mapping[str, tuple[int, int]]) -> None:
    """Raise InventoryError when a VM size is beyond what its hypervisor has."""
    problems = check_capacity(fleet, capacity)
    if problems:
        raise InventoryError(problems)

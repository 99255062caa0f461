"""What each hypervisor can hold, measured where it can be: validating an inventory must not
need a running libvirtd (a laptop reviewing it has none)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kallikratis import model
from kallikratis.errors import HypervisorError
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

"""VM sizes against what each hypervisor has."""

from __future__ import annotations

from collections.abc import Mapping

from kallikratis import model
from kallikratis.errors import InventoryError, Problem


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

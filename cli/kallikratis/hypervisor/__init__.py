"""Hypervisor access behind a small interface; the backend is chosen by the libvirt URI.

:class:`LibvirtBackend` (qemu:///system, qemu+ssh://host/system, test:///default) returns the
frozen values of :mod:`kallikratis.hypervisor.base`; libvirt errors become
:class:`~kallikratis.errors.HypervisorError`.
"""

from collections.abc import Callable

from kallikratis.hypervisor.base import DhcpHost, DomainInfo, HostInfo, SnapshotInfo, VolumeInfo
from kallikratis.hypervisor.libvirt_backend import LibvirtBackend, connect
from kallikratis.hypervisor.snapshots import PREFIX as SNAPSHOT_PREFIX

#: what the services take to reach a hypervisor: its name in the inventory -> a backend
BackendFactory = Callable[[str], LibvirtBackend]

__all__ = [
    "SNAPSHOT_PREFIX",
    "BackendFactory",
    "DhcpHost",
    "DomainInfo",
    "HostInfo",
    "LibvirtBackend",
    "SnapshotInfo",
    "VolumeInfo",
    "connect",
]

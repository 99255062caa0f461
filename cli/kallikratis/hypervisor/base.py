"""Frozen value objects the hypervisor backend returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class VolumeInfo:
    pool: str
    name: str
    path: str
    capacity_bytes: int
    allocation_bytes: int


@dataclass(frozen=True)
class DhcpHost:
    """A DHCP reservation in a libvirt network."""

    mac: str
    name: str
    ip: str


@dataclass(frozen=True)
class DomainInfo:
    """A domain that carries Kallikratis metadata (we never report or touch any other)."""

    name: str
    state: str  # running, shut off, paused, crashed, ...
    fleet: str
    slug: str
    display_name: str
    image: str
    spec_hash: str
    seed_hash: str
    host_key: str
    spec: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    started: float | None = None
    live_spec_hash: str = ""
    seed_retired: bool = False  # the seed no longer carries the host's private key

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: int  # seconds since the epoch
    state: str  # the domain state captured: running, shutoff, ...
    description: str
    current: bool

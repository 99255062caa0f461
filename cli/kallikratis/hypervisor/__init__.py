"""Hypervisor access behind a small interface; the backend is chosen by the libvirt URI."""

from kallikratis.hypervisor.base import DhcpHost, DomainInfo, HostInfo, VolumeInfo
from kallikratis.hypervisor.libvirt_backend import LibvirtBackend, connect

__all__ = ["DhcpHost", "DomainInfo", "HostInfo", "LibvirtBackend", "VolumeInfo", "connect"]

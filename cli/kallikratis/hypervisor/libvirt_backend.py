"""The libvirt backend: qemu:///system, qemu+ssh://host/system and test:///default alike."""

from __future__ import annotations

import io
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial
from pathlib import Path

import libvirt

from kallikratis.errors import HypervisorError
from kallikratis.hypervisor.base import DomainInfo, HostInfo, VolumeInfo
from kallikratis.hypervisor.libvirt_calls import errors as _errors
from kallikratis.hypervisor.libvirt_calls import or_none
from kallikratis.hypervisor.networks import Networks, dhcp_host_xml
from kallikratis.hypervisor.reconnect import idempotent, once
from kallikratis.hypervisor.snapshots import Snapshots
from kallikratis.model import METADATA_NS

log = logging.getLogger(__name__)
__all__ = ["LibvirtBackend", "connect", "dhcp_host_xml"]
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors become exceptions, not stderr

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
_CHUNK = 1 << 20


def connect(uri: str, reconnect_seconds: float | None = None) -> LibvirtBackend:
    """Open *uri* (at once: a wrong URI fails fast; only a lost connection is waited for)."""
    with _errors(f"cannot connect to {uri}"):
        return LibvirtBackend(uri, libvirt.open(uri), reconnect_seconds)


def _text(root: ET.Element, tag: str) -> str:
    el = root.find(tag)
    return (el.text or "") if el is not None else ""


def _strip_ns(root: ET.Element) -> ET.Element:
    """libvirt's metadata API drops the element prefixes: compare tags without namespace."""
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root


class LibvirtBackend(Snapshots, Networks):
    """One connection to one hypervisor; reconnects after a daemon restart (see
    :mod:`kallikratis.hypervisor.reconnect`): *reconnect_seconds* bounds the wait (None: the
    environment's or 60 s), *opener* opens the URI again."""

    def __init__(
        self,
        uri: str,
        conn: libvirt.virConnect,
        reconnect_seconds: float | None = None,
        opener: Callable[[str], libvirt.virConnect] = libvirt.open,
    ) -> None:
        self.uri = uri
        self.conn = conn
        self._init_connection(reconnect_seconds, opener)

    @property
    def stores_data(self) -> bool:
        """Volumes keep their contents (upload/download) and pools their directories.

        The one difference of libvirt's test driver that callers see: it does neither.
        """
        return not self.uri.startswith("test:")

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError as exc:  # closing a connection that is gone already
            log.debug("closing %s: %s", self.uri, exc.get_error_message())

    # -- host ------------------------------------------------------------------------------
    @idempotent
    def host_info(self) -> HostInfo:
        with _errors("reading host info"):
            info = self.conn.getInfo()
            return HostInfo(self.conn.getHostname(), int(info[2]), int(info[1]))

    # -- domains ---------------------------------------------------------------------------
    def _metadata(self, dom: libvirt.virDomain, live: bool) -> ET.Element | None:
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        raw = or_none(
            lambda: dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, flags),
            libvirt.VIR_ERR_NO_DOMAIN_METADATA,
            libvirt.VIR_ERR_OPERATION_INVALID,
        )
        return _strip_ns(ET.fromstring(raw)) if raw is not None else None

    def _info(self, dom: libvirt.virDomain) -> DomainInfo | None:
        meta = self._metadata(dom, live=False)
        if meta is None:
            return None
        state = _STATES.get(dom.state()[0], "unknown")
        live = self._metadata(dom, live=True) if state == "running" else None
        started = _text(live, "started") if live is not None else ""
        try:
            spec = json.loads(_text(meta, "spec") or "{}")
        except ValueError:
            spec = {}
        return DomainInfo(
            name=dom.name(),
            state=state,
            fleet=_text(meta, "fleet"),
            slug=_text(meta, "slug"),
            display_name=_text(meta, "display-name"),
            image=_text(meta, "image"),
            spec_hash=_text(meta, "spec-hash"),
            seed_hash=_text(meta, "seed-hash"),
            host_key=_text(meta, "host-key"),
            spec=spec,
            started=float(started) if started else None,
            live_spec_hash=_text(live, "spec-hash") if live is not None else "",
            seed_retired=_text(meta, "seed") == "retired",
        )

    @idempotent
    def domains(self, fleet: str | None = None) -> list[DomainInfo]:
        """Domains carrying our metadata (of one fleet, if given). Others are invisible."""
        out = []
        with _errors("listing domains"):
            for dom in self.conn.listAllDomains():
                # None: not ours, or vanished while we looked
                info = or_none(partial(self._info, dom), libvirt.VIR_ERR_NO_DOMAIN)
                if info and (fleet is None or info.fleet == fleet):
                    out.append(info)
        return out

    @idempotent
    def domain(self, name: str) -> DomainInfo | None:
        with _errors(f"looking up domain {name}"):
            dom = self._lookup(name)
            return self._info(dom) if dom else None

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        return or_none(lambda: self.conn.lookupByName(name), libvirt.VIR_ERR_NO_DOMAIN)

    @idempotent
    def domain_xml(self, name: str, inactive: bool = False) -> str:
        with _errors(f"reading domain {name}"):
            dom = self.conn.lookupByName(name)
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)

    @idempotent
    def define_domain(self, xml: str) -> None:
        """Define or redefine; a redefinition keeps the existing domain's UUID."""
        with _errors("defining domain"):
            root = ET.fromstring(xml)
            existing = self._lookup(root.findtext("name") or "")
            if existing is not None and root.find("uuid") is None:
                xml = xml.replace("</name>", f"</name>\n  <uuid>{existing.UUIDString()}</uuid>", 1)
            self.conn.defineXML(xml)

    @idempotent
    def start_domain(self, name: str) -> None:
        with _errors(f"starting domain {name}"):
            dom = self.conn.lookupByName(name)
            if not dom.isActive():
                dom.create()
            meta = self._metadata(dom, live=True)
            if meta is not None and meta.find("started") is None:
                ET.SubElement(meta, "started").text = str(int(time.time()))
                dom.setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    ET.tostring(meta, encoding="unicode"),
                    "kk",
                    METADATA_NS,
                    libvirt.VIR_DOMAIN_AFFECT_LIVE,
                )

    @idempotent
    def stop_domain(self, name: str, timeout: float = 60.0) -> None:
        """Graceful ACPI shutdown, then power off after *timeout* seconds."""
        with _errors(f"stopping domain {name}"):
            dom = self.conn.lookupByName(name)
            if dom.isActive():
                dom.shutdown()
                deadline = time.monotonic() + timeout
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.5)
                if dom.isActive():
                    dom.destroy()

    @idempotent
    def remove_domain(self, name: str) -> bool:
        """Power off and undefine a domain that carries our metadata. False if absent."""
        with _errors(f"removing domain {name}"):
            dom = self._lookup(name)
            if dom is None:
                return False
            if self._metadata(dom, live=False) is None:
                raise HypervisorError(f"refusing to remove {name}: it has no Kallikratis metadata")
            if dom.isActive():
                dom.destroy()
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            )
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:  # drivers without NVRAM (the test driver)
                if exc.get_error_code() not in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                ):
                    raise
                dom.undefineFlags(flags & ~libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            return True

    # -- storage ---------------------------------------------------------------------------
    @idempotent
    def ensure_pool(self, name: str, xml: str) -> bool:
        changed = False
        with _errors(f"storage pool {name}"):
            pool = self._pool(name)
            if pool is None:
                pool = self.conn.storagePoolDefineXML(xml)
                if self.stores_data:
                    pool.build(0)
                changed = True
            if not pool.isActive():
                pool.create()
                changed = True
            if not pool.autostart():
                pool.setAutostart(1)
            pool.refresh()
        return changed

    def _pool(self, name: str) -> libvirt.virStoragePool | None:
        return or_none(
            lambda: self.conn.storagePoolLookupByName(name), libvirt.VIR_ERR_NO_STORAGE_POOL
        )

    def _vol(self, pool: str, name: str) -> libvirt.virStorageVol | None:
        return or_none(  # no pool, no volume
            lambda: self.conn.storagePoolLookupByName(pool).storageVolLookupByName(name),
            libvirt.VIR_ERR_NO_STORAGE_VOL,
            libvirt.VIR_ERR_NO_STORAGE_POOL,
        )

    @staticmethod
    def _vinfo(pool: str, vol: libvirt.virStorageVol) -> VolumeInfo:
        _type, cap, alloc = vol.info()
        return VolumeInfo(pool, vol.name(), vol.path(), int(cap), int(alloc))

    @idempotent
    def pool_space(self, pool: str) -> tuple[int, int]:
        """(capacity, available) bytes of *pool*, as libvirt sees them after a refresh."""
        with _errors(f"reading pool {pool}"):
            p = self.conn.storagePoolLookupByName(pool)
            p.refresh(0)
            _state, capacity, _allocation, available = p.info()
            return int(capacity), int(available)

    @idempotent
    def domain_memory(self, name: str) -> int:
        """The domain's maximum memory in bytes (what a memory snapshot may have to store)."""
        with _errors(f"reading domain {name}"):
            return int(self.conn.lookupByName(name).maxMemory()) * 1024

    @idempotent
    def snapshot_disks(self, name: str) -> list[VolumeInfo]:
        """The pool volumes a snapshot of the domain writes into (neither marked
        snapshot="no" nor read-only), the first one (which takes the memory state) first."""
        with _errors(f"reading the disks of {name}"):
            root = ET.fromstring(self.conn.lookupByName(name).XMLDesc(0))
            out = []
            for disk in root.iterfind("./devices/disk[@device='disk']"):
                src = disk.find("source")
                skipped = disk.get("snapshot") == "no" or disk.find("readonly") is not None
                if skipped or src is None or not src.get("volume"):
                    continue
                vol = self._vol(src.get("pool", ""), src.get("volume", ""))
                if vol is not None:
                    out.append(self._vinfo(src.get("pool", ""), vol))
            return out

    @idempotent
    def volume(self, pool: str, name: str) -> VolumeInfo | None:
        with _errors(f"looking up volume {pool}/{name}"):
            vol = self._vol(pool, name)
            return self._vinfo(pool, vol) if vol else None

    @idempotent
    def volumes(self, pool: str) -> list[VolumeInfo]:
        with _errors(f"listing pool {pool}"):
            p = self._pool(pool)
            if p is None:
                return []
            p.refresh()
            return [self._vinfo(pool, v) for v in p.listAllVolumes()]

    @once
    def create_volume(self, pool: str, xml: str) -> VolumeInfo:
        with _errors(f"creating volume in {pool}"):
            vol = self.conn.storagePoolLookupByName(pool).createXML(xml, 0)
            return self._vinfo(pool, vol)

    @idempotent
    def delete_volume(self, pool: str, name: str) -> bool:
        with _errors(f"deleting volume {pool}/{name}"):
            vol = self._vol(pool, name)
            if vol is None:
                return False
            vol.delete(0)
            return True

    @once
    def upload(
        self,
        pool: str,
        name: str,
        source: bytes | Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream *source* into an existing volume (works on remote hypervisors too), from its
        first byte, in place. The test driver keeps no contents: nothing to send there."""
        if not self.stores_data:
            return
        with _errors(f"uploading into {pool}/{name}"):
            vol = self.conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
            size = len(source) if isinstance(source, bytes) else source.stat().st_size
            stream = self.conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as fh:
                try:
                    done = 0
                    while chunk := fh.read(_CHUNK):
                        sent = 0
                        while sent < len(chunk):
                            sent += stream.send(chunk[sent:])
                        done += len(chunk)
                        if progress:
                            progress(done)
                    stream.finish()
                except BaseException:
                    stream.abort()
                    raise

    @idempotent
    def download(self, pool: str, name: str) -> bytes:
        with _errors(f"downloading {pool}/{name}"):
            vol = self.conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
            stream = self.conn.newStream(0)
            vol.download(stream, 0, 0, 0)
            parts: list[bytes] = []
            stream.recvAll(lambda _s, data, acc: acc.append(data) or 0, parts)
            stream.finish()
            return b"".join(parts)

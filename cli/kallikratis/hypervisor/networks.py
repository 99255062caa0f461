"""Virtual networks and DHCP reservations: part of the libvirt backend (a mixin)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from kallikratis.errors import HypervisorError
from kallikratis.hypervisor.base import DhcpHost
from kallikratis.hypervisor.libvirt_calls import errors as _errors
from kallikratis.hypervisor.libvirt_calls import or_none
from kallikratis.hypervisor.reconnect import Reconnecting, idempotent


def _xml(tag: str, **attrs: str) -> str:
    return ET.tostring(ET.Element(tag, attrs), encoding="unicode")


def dhcp_host_xml(host: DhcpHost) -> str:
    """The <host> element of a reservation, as libvirt's network update takes it."""
    return _xml("host", mac=host.mac, name=host.name, ip=host.ip)


class Networks(Reconnecting):
    """Network methods of the libvirt backend (needs its ``uri`` and ``conn``)."""

    # -- networks --------------------------------------------------------------------------
    @idempotent
    def ensure_network(self, name: str, xml: str) -> bool:
        """Define and start the network if needed; True when something changed."""
        changed = False
        with _errors(f"network {name}"):
            net = self._network(name)
            if net is None:
                net = self.conn.networkDefineXML(xml)
                changed = True
            if not net.isActive():
                net.create()
                changed = True
            if not net.autostart():
                net.setAutostart(1)
        return changed

    @idempotent
    def require_nwfilter(self, name: str) -> None:
        """Refuse to go on when libvirt does not know the network filter the domains name.

        libvirt ships `clean-traffic` and the filters it builds on (Debian:
        libvirt-daemon-config-nwfilter); without them no VM with tenant isolation can start.
        The test driver has no filter driver and checks nothing.
        """
        if self.uri.startswith("test:"):
            return
        with _errors(f"looking up network filter {name}"):
            found = or_none(
                lambda: self.conn.nwfilterLookupByName(name), libvirt.VIR_ERR_NO_NWFILTER
            )
        if found is None:
            raise HypervisorError(
                f"libvirt at {self.uri} has no network filter {name!r}, which every VM's "
                "interface uses for tenant isolation: install libvirt's stock filters "
                "(Debian: libvirt-daemon-config-nwfilter; `virsh nwfilter-list` shows them)"
            )

    @idempotent
    def remove_network(self, name: str) -> bool:
        """Stop and undefine a network no defined domain uses; False when absent or in use."""
        with _errors(f"removing network {name}"):
            net = self._network(name)
            if net is None:
                return False
            for dom in self.conn.listAllDomains():
                root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                if any(
                    s.get("network") == name for s in root.iterfind("./devices/interface/source")
                ):
                    return False
            if net.isActive():
                net.destroy()
            net.undefine()
            return True

    def _network(self, name: str) -> libvirt.virNetwork | None:
        return or_none(lambda: self.conn.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK)

    @idempotent
    def network_exists(self, network: str) -> bool:
        with _errors(f"looking up network {network}"):
            return self._network(network) is not None

    @idempotent
    def dhcp_hosts(self, network: str) -> dict[str, tuple[str, str]]:
        """mac -> (name, ip) of the network's DHCP reservations."""
        with _errors(f"reading network {network}"):
            root = ET.fromstring(self.conn.networkLookupByName(network).XMLDesc(0))
        return {
            h.get("mac", "").lower(): (h.get("name", ""), h.get("ip", ""))
            for h in root.iterfind("./ip/dhcp/host")
        }

    @idempotent
    def set_dhcp_host(self, network: str, host: DhcpHost, present: bool) -> bool:
        """Add (present) or remove a DHCP reservation, live and in the config.

        Removing from a network that no longer exists is a no-op (nothing to remove).
        """
        if not present and not self.network_exists(network):
            return False
        current = self.dhcp_hosts(network).get(host.mac.lower())
        if present and current == (host.name, host.ip):
            return False
        if not present and current is None:
            return False
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        with _errors(f"updating DHCP reservations of {network}"):
            net = self.conn.networkLookupByName(network)
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
            if current is not None:
                old = _xml("host", mac=host.mac)
                net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, -1, old, flags)
            if present:
                net.update(
                    libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                    section,
                    -1,
                    dhcp_host_xml(host),
                    flags,
                )
        return True

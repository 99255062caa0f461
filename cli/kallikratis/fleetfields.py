"""Fleet-wide inventory fields: name servers, storage pool, administrators' SSH keys.

Pure parsing like :mod:`kallikratis.opsfields`: each function takes the raw value and returns
the model value plus a list of (field, message) problems; :mod:`kallikratis.inventory` adds
file and entry. Every string is hostile until proven otherwise: no control characters (a
newline in a value must never become a new line in a config file).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from kallikratis import model

Problems = list[tuple[str, str]]

#: C0/C1 controls, DEL and the Unicode line/paragraph separators YAML breaks lines at
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
POOL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # a Linux interface name
POOL_PATH_RE = re.compile(r"/[^\s]*")
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
SSH_KEY_RE = re.compile(
    r"(?P<type>\S+) [A-Za-z0-9+/]{16,}={0,3}( [^\x00-\x1f\x7f]*)?",
)
DEFAULT_POOL = model.StoragePool("kallikratis", "/var/lib/libvirt/images/kallikratis")


def has_control(text: str) -> bool:
    return CONTROL_RE.search(text) is not None


def dns_servers(value: Any, gateway: str) -> tuple[tuple[str, ...], Problems]:
    """`fleet_network.dns`: IP addresses of the VMs' name servers (default: the gateway)."""
    if value is None:
        return (gateway,), []
    if not isinstance(value, list) or not value:
        return (gateway,), [("fleet_network.dns", f"must be a list of addresses, got {value!r}")]
    problems: Problems = []
    for server in value:
        try:
            ipaddress.ip_address(server if isinstance(server, str) else "")
        except ValueError:
            problems.append(("fleet_network.dns", f"not an IP address: {server!r}"))
    if problems:
        return (gateway,), problems
    return tuple(value), []


def network_names(net: dict[str, Any], fleet_name: str) -> tuple[tuple[str, str], Problems]:
    """`fleet_network.name` (the libvirt network) and `.bridge` (its Linux bridge)."""
    name = net.get("name", f"kallikratis-{fleet_name}")
    bridge = net.get("bridge", f"kk-{fleet_name}"[:15])
    problems: Problems = []
    if not isinstance(name, str) or not POOL_NAME_RE.fullmatch(name):
        why = f"not a libvirt network name (letters, digits, _ . + -): {name!r}"
        problems.append(("fleet_network.name", why))
    if not isinstance(bridge, str) or not BRIDGE_RE.fullmatch(bridge):
        why = f"not a bridge name (at most 15 letters, digits, _ . -): {bridge!r}"
        problems.append(("fleet_network.bridge", why))
    if problems:
        return (f"kallikratis-{fleet_name}", f"kk-{fleet_name}"[:15]), problems
    return (name, bridge), []


def storage_pool(value: Any) -> tuple[model.StoragePool, Problems]:
    """`fleet_storage_pool`: the libvirt directory pool holding overlays, seeds and images."""
    if value is None:
        return DEFAULT_POOL, []
    if not isinstance(value, dict):
        return DEFAULT_POOL, [("fleet_storage_pool", "must be a mapping with name and path")]
    problems: Problems = []
    name = value.get("name", DEFAULT_POOL.name)
    if not isinstance(name, str) or not POOL_NAME_RE.fullmatch(name):
        why = f"not a storage pool name (letters, digits, _ . + -): {name!r}"
        problems.append(("fleet_storage_pool.name", why))
    path = value.get("path", DEFAULT_POOL.path)
    if not isinstance(path, str) or not POOL_PATH_RE.fullmatch(path) or has_control(path):
        why = f"must be an absolute path without spaces: {path!r}"
        problems.append(("fleet_storage_pool.path", why))
    if problems:
        return DEFAULT_POOL, problems
    return model.StoragePool(name, path), []


def admin_ssh_keys(value: Any) -> tuple[tuple[str, ...], Problems]:
    """`admin_ssh_keys`: one OpenSSH public key per item, each a single line."""
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), [("admin_ssh_keys", "must be a list of public key strings")]
    problems: Problems = []
    for i, key in enumerate(value):
        match = SSH_KEY_RE.fullmatch(key) if isinstance(key, str) else None
        if match is None or match["type"] not in SSH_KEY_TYPES or has_control(key):
            shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
            why = f"not one OpenSSH public key line ('<type> <base64> [comment]'): {shown}"
            problems.append((f"admin_ssh_keys[{i}]", why))
    if problems:
        return (), problems
    return tuple(value), []


def controller_address(
    net: dict[str, Any],
    mode: str,
    cidr: ipaddress.IPv4Network,
    gateway: ipaddress.IPv4Address,
) -> tuple[ipaddress.IPv4Address, Problems]:
    """`fleet_network.controller`: the controller's address on the fleet network.

    On a network libvirt manages that is the gateway (libvirt's own side of the bridge), the
    default. On an existing bridge the gateway is a router, which must never be a management
    source: there the address must be given.
    """
    value = net.get("controller")
    if value is None:
        if mode == "bridge":
            why = "required with mode bridge: the controller's address on the bridge"
            return gateway, [("fleet_network.controller", why)]
        return gateway, []
    try:
        address = ipaddress.IPv4Address(value if isinstance(value, str) else "")
    except ValueError:
        return gateway, [("fleet_network.controller", f"not an IPv4 address: {value!r}")]
    if address not in cidr or address in (cidr.network_address, cidr.broadcast_address):
        return gateway, [("fleet_network.controller", f"{address} is not a host address of {cidr}")]
    return address, []

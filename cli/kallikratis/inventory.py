"""Load and validate an inventory into a :class:`~kallikratis.model.Fleet`.

Every problem is collected (not just the first) and reported with file, entry and field.
The fleet-wide sections are here, the municipality entries in :mod:`kallikratis.municipalities`.
Nothing here touches a hypervisor (capacity checks: :mod:`kallikratis.capacity`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kallikratis import (
    backupfields,
    centralfields,
    endpointfields,
    fleetfields,
    hostilevars,
    model,
)
from kallikratis.checker import DNS_LABEL, Checker, is_fqdn
from kallikratis.errors import InventoryError
from kallikratis.municipalities import load_municipalities
from kallikratis.varsfiles import RawInventory, Vars, load_raw

PROFILE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "test")
DOMAIN_TYPE_ENV = "KALLIKRATIS_DOMAIN_TYPE"
DEFAULT_PROFILES = {"small": {"vcpus": 1, "memory_mib": 1024, "disk_gib": 10}}


def load(path: str | Path) -> model.Fleet:
    """Read and validate the inventory at *path* (a directory or a hosts.yml).

    Default addresses come from the deterministic allocation alone (no state: what offline
    paths use); :mod:`kallikratis.addresses` settles them against the VMs that exist.
    """
    raw = load_raw(Path(path))
    chk = Checker(raw)
    gvars = raw.vars_for_host("\0none")  # all-level variables only
    fleet_name = _fleet_name(chk, gvars)
    network = _network(chk, gvars, fleet_name)
    profiles = _profiles(chk, gvars)
    hypervisors = _hypervisors(chk, raw, gvars)
    fleet_domain = gvars.get("fleet_domain", f"{fleet_name}.kallikratis.test")
    if not is_fqdn(fleet_domain):
        chk.add(gvars, "all", "fleet_domain", f"not a valid domain name: {fleet_domain!r}")
        fleet_domain = f"{fleet_name}.kallikratis.test"  # one problem, not one per municipality
    municipalities = load_municipalities(
        chk, raw, gvars, fleet_name, fleet_domain, network, profiles, hypervisors
    )
    pool = chk.fleetwide(gvars, gvars.get("fleet_storage_pool"), fleetfields.storage_pool)
    admin_keys = chk.fleetwide(gvars, gvars.get("admin_ssh_keys"), fleetfields.admin_ssh_keys)
    admin_allow = chk.fleetwide(gvars, gvars.get("admin_allow"), endpointfields.admin_allow)
    acme = _tls(chk, raw, gvars, fleet_domain, municipalities)
    alerts = chk.fleetwide(
        gvars, {k: gvars.get(k) for k in centralfields.ALERT_KEYS}, centralfields.alerts
    )
    retention = chk.fleetwide(
        gvars,
        gvars.get("backup_retention_after_destroy"),
        backupfields.backup_retention_after_destroy,
    )
    _fleet_only(chk, raw, "backup_retention_after_destroy")
    restore_net = chk.fleetwide(
        gvars,
        gvars.get("restore_test_network"),
        lambda v: backupfields.restore_test_network(v, network.cidr),
    )
    _fleet_only(chk, raw, "restore_test_network")
    admin_user = chk.string(gvars, "all", "admin_user", gvars.get("admin_user"), "kallikratis")
    if not DNS_LABEL.fullmatch(admin_user) or admin_user == "root":
        chk.add(gvars, "all", "admin_user", f"not a valid non-root user name: {admin_user!r}")
    hostilevars.refuse_connection_overrides(chk, gvars)
    hostilevars.reject_control_characters(chk)
    if chk.problems:
        raise InventoryError(chk.problems)
    return model.Fleet(
        name=fleet_name,
        domain=fleet_domain,
        inventory=raw.hosts_file.parent,
        network=network,
        pool=pool,
        image=chk.string(gvars, "all", "fleet_image", gvars.get("fleet_image"), "debian13"),
        admin_user=admin_user,
        admin_ssh_keys=admin_keys,
        profiles=profiles,
        hypervisors=hypervisors,
        municipalities=municipalities,
        admin_allow=admin_allow,
        acme=acme,
        alerts=alerts,
        backup_retention_after_destroy=retention,
        restore_test_network=ipaddress.IPv4Network(restore_net),
    )


def _fleet_only(chk: Checker, raw: RawInventory, key: str) -> None:
    """*key* is read from group_vars/all only: set for one VM it would be silently ignored."""
    for host, vars_ in sorted(raw.host_vars.items()):
        if key in vars_.values:
            why = "a fleet-wide setting: set it in group_vars/all, not for one VM"
            chk.add(vars_, host, key, why)


def _tls(
    chk: Checker,
    raw: RawInventory,
    gvars: Vars,
    fleet_domain: str,
    municipalities: tuple[model.Municipality, ...],
) -> model.Acme | None:
    """Each municipality's issuer fits its domain; the ACME account when one needs it."""
    for m in municipalities:
        if problem := endpointfields.tls_domain_problem(m.tls, m.domain, fleet_domain):
            chk.add(raw.vars_for_host(m.slug), m.slug, "domain", problem)
    needed = any(m.tls == "acme" for m in municipalities)
    values = {k: gvars.get(k) for k in endpointfields.ACME_KEYS}
    inventory = raw.hosts_file.parent
    return chk.fleetwide(gvars, values, lambda v: endpointfields.acme(v, needed, inventory))


def _fleet_name(chk: Checker, gvars: Vars) -> str:
    name = gvars.get("fleet_name")
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name) or len(name) > 20:
        chk.add(
            gvars, "all", "fleet_name", f"must be a DNS label of at most 20 chars, got {name!r}"
        )
        return "fleet"
    return name


def _network(chk: Checker, gvars: Vars, fleet_name: str) -> model.Network:
    net = gvars.get("fleet_network") or {}
    fallback = ipaddress.IPv4Network("10.42.0.0/24")
    if not isinstance(net, dict):
        chk.add(gvars, "all", "fleet_network", "must be a mapping")
        net = {}
    mode = net.get("mode", "nat")
    if mode not in model.NETWORK_MODES:
        chk.add(gvars, "all", "fleet_network.mode", f"must be one of {model.NETWORK_MODES}")
    try:
        cidr = ipaddress.IPv4Network(str(net.get("cidr", "10.42.0.0/24")), strict=True)
        if cidr.num_addresses < 8:
            raise ValueError("fewer than 8 addresses")
    except ValueError as exc:
        chk.add(gvars, "all", "fleet_network.cidr", f"not a valid IPv4 network: {exc}")
        cidr = fallback
    try:
        gateway = ipaddress.IPv4Address(str(net.get("gateway", cidr.network_address + 1)))
        if gateway not in cidr or gateway in (cidr.network_address, cidr.broadcast_address):
            raise ValueError(f"{gateway} is not a host address of {cidr}")
    except ValueError as exc:
        chk.add(gvars, "all", "fleet_network.gateway", str(exc))
        gateway = cidr.network_address + 1
    dns = chk.fleetwide(gvars, net.get("dns"), lambda v: fleetfields.dns_servers(v, str(gateway)))
    name, bridge = chk.fleetwide(gvars, net, lambda v: fleetfields.network_names(v, fleet_name))
    controller = chk.fleetwide(
        gvars, net, lambda v: fleetfields.controller_address(v, str(mode), cidr, gateway)
    )
    return model.Network(name, str(mode), cidr, gateway, dns, bridge, controller)


def _profiles(chk: Checker, gvars: Vars) -> dict[str, model.Profile]:
    raw_profiles = gvars.get("vm_profiles", DEFAULT_PROFILES)
    out: dict[str, model.Profile] = {}
    if not isinstance(raw_profiles, dict) or not raw_profiles:
        chk.add(gvars, "all", "vm_profiles", "must be a non-empty mapping of profiles")
        return {"small": model.Profile("small", 1, 1024, 10)}
    for pname, spec in raw_profiles.items():
        fld = f"vm_profiles.{pname}"
        if not isinstance(pname, str) or not PROFILE_RE.fullmatch(pname):
            chk.add(gvars, "all", "vm_profiles", f"not a profile name (a-z 0-9 _ -): {pname!r}")
            continue
        if not isinstance(spec, dict):
            chk.add(gvars, "all", fld, "must be a mapping with vcpus, memory_mib, disk_gib")
            continue
        vals = [
            chk.positive_int(gvars, "all", f"{fld}.{k}", spec.get(k))
            for k in ("vcpus", "memory_mib", "disk_gib")
        ]
        out[str(pname)] = model.Profile(str(pname), *vals)
    return out


def _hypervisors(chk: Checker, raw: RawInventory, gvars: Vars) -> dict[str, model.Hypervisor]:
    out: dict[str, model.Hypervisor] = {}
    env_type = os.environ.get(DOMAIN_TYPE_ENV)
    if env_type and env_type not in model.DOMAIN_TYPES:
        chk.add(None, "environment", DOMAIN_TYPE_ENV, f"must be one of {model.DOMAIN_TYPES}")
        env_type = None  # one problem, not one more per hypervisor
    names = raw.groups.get("hypervisors", [])
    if not names:
        chk.add(None, "hypervisors", "hosts", "the inventory needs at least one hypervisor")
    for name in names:
        hv = raw.vars_for_host(name)
        uri = hv.get("libvirt_uri")
        if not valid_libvirt_uri(uri):
            chk.add(hv, name, "libvirt_uri", f"not a libvirt URI we support: {uri!r}")
        dtype = env_type or hv.get("domain_type", "kvm")
        if dtype not in model.DOMAIN_TYPES:
            chk.add(hv, name, "domain_type", f"must be one of {model.DOMAIN_TYPES}, got {dtype!r}")
        out[name] = model.Hypervisor(name, str(uri), str(dtype))
    return out


def valid_libvirt_uri(uri: Any) -> bool:
    if not isinstance(uri, str):
        return False
    parts = urlsplit(uri)
    if parts.scheme not in URI_SCHEMES:
        return False
    if parts.scheme == "test":
        return parts.path == "/default" or (parts.path.startswith("/") and len(parts.path) > 1)
    if parts.path not in ("/system", "/session"):
        return False
    if parts.scheme in ("qemu+ssh", "qemu+tcp", "qemu+tls"):
        return bool(parts.netloc)
    return parts.scheme != "qemu+unix" or not parts.netloc  # qemu:/// local, qemu://host TLS

"""Load and validate an inventory into a :class:`~kallikratis.model.Fleet`.

Every problem is collected (not just the first) and reported with file, entry and field.
Nothing here touches a hypervisor; :func:`check_capacity` takes what the caller measured.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from kallikratis import fleetfields, model, opsfields, schedule
from kallikratis.errors import InventoryError, Problem
from kallikratis.varsfiles import RawInventory, Vars, load_raw

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
LOGO_RE = re.compile(r"^(https://[^\s\"'<>]+|/[^\s\"'<>]*)$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
PROFILE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "test")
DOMAIN_TYPE_ENV = "KALLIKRATIS_DOMAIN_TYPE"

DEFAULT_PROFILES = {"small": {"vcpus": 1, "memory_mib": 1024, "disk_gib": 10}}
T = TypeVar("T")


def is_fqdn(name: Any) -> bool:
    if not isinstance(name, str) or not 1 <= len(name) <= 253 or "." not in name:
        return False
    return all(DNS_LABEL.fullmatch(label) for label in name.split("."))


def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def _defined_by(raw: RawInventory, host: str, key: str) -> str:
    """The host, or the group whose variables give *host* its value of *key* (as Ansible
    merges them: all, then the other groups sorted, then the host)."""
    if key in raw.host_vars.get(host, Vars()).values:
        return host
    groups = ["all"] + sorted(g for g, hs in raw.groups.items() if host in hs and g != "all")
    for group in reversed(groups):
        if key in raw.group_vars.get(group, Vars()).values:
            return group
    return host


class _Checker:
    """Collects problems while turning raw variables into model values."""

    def __init__(self, raw: RawInventory) -> None:
        self.raw = raw
        self.src = str(raw.hosts_file)
        self.problems: list[Problem] = []
        self._shared: dict[tuple[str, str, str], Any] = {}

    def add(self, vars_: Vars | None, entry: str, fld: str, msg: str) -> None:
        where = vars_.where(re.split(r"[.\[]", fld)[0], self.src) if vars_ else self.src
        self.problems.append(Problem(where, entry, fld, msg))

    def shared(self, hv: Vars, slug: str, key: str, parse: Callable[[Any], tuple[T, Any]]) -> T:
        """Parse *key* of a municipality; a value set for a group is checked (and reported,
        under the group's name) once, not once per member."""
        entry = _defined_by(self.raw, slug, key)
        memo_key = (entry, hv.where(key, self.src), key)
        if entry != slug and memo_key in self._shared:
            return cast(T, self._shared[memo_key])
        value, problems = parse(hv.get(key))
        for fld, msg in problems:
            self.add(hv, entry, fld, msg)
        self._shared[memo_key] = value
        return value

    def fleetwide(self, gvars: Vars, raw: Any, parse: Callable[[Any], tuple[T, Any]]) -> T:
        """Parse a fleet-wide value; its problems are reported under the entry `all`."""
        value, problems = parse(raw)
        for fld, msg in problems:
            self.add(gvars, "all", fld, msg)
        return value

    def positive_int(self, vars_: Vars, entry: str, fld: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.add(vars_, entry, fld, f"must be a positive integer, got {value!r}")
            return 1
        return value

    def string(self, vars_: Vars, entry: str, fld: str, value: Any, default: str = "") -> str:
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(vars_, entry, fld, f"must be a non-empty string, got {value!r}")
            return default
        return value


def load(path: str | Path) -> model.Fleet:
    """Read and validate the inventory at *path* (a directory or a hosts.yml)."""
    raw = load_raw(Path(path))
    chk = _Checker(raw)
    gvars = raw.vars_for_host("\0none")  # all-level variables only
    fleet_name = _fleet_name(chk, gvars)
    network = _network(chk, gvars, fleet_name)
    profiles = _profiles(chk, gvars)
    hypervisors = _hypervisors(chk, raw, gvars)
    fleet_domain = gvars.get("fleet_domain", f"{fleet_name}.kallikratis.test")
    if not is_fqdn(fleet_domain):
        chk.add(gvars, "all", "fleet_domain", f"not a valid domain name: {fleet_domain!r}")
        fleet_domain = f"{fleet_name}.kallikratis.test"  # one problem, not one per municipality
    municipalities = _municipalities(
        chk, raw, gvars, fleet_name, fleet_domain, network, profiles, hypervisors
    )
    pool = chk.fleetwide(gvars, gvars.get("fleet_storage_pool"), fleetfields.storage_pool)
    admin_keys = chk.fleetwide(gvars, gvars.get("admin_ssh_keys"), fleetfields.admin_ssh_keys)
    admin_user = chk.string(gvars, "all", "admin_user", gvars.get("admin_user"), "kallikratis")
    if not DNS_LABEL.fullmatch(admin_user) or admin_user == "root":
        chk.add(gvars, "all", "admin_user", f"not a valid non-root user name: {admin_user!r}")
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
    )


def _fleet_name(chk: _Checker, gvars: Vars) -> str:
    name = gvars.get("fleet_name")
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name) or len(name) > 20:
        chk.add(
            gvars, "all", "fleet_name", f"must be a DNS label of at most 20 chars, got {name!r}"
        )
        return "fleet"
    return name


def _network(chk: _Checker, gvars: Vars, fleet_name: str) -> model.Network:
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
    return model.Network(name, str(mode), cidr, gateway, dns, bridge)


def _profiles(chk: _Checker, gvars: Vars) -> dict[str, model.Profile]:
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


def _hypervisors(chk: _Checker, raw: RawInventory, gvars: Vars) -> dict[str, model.Hypervisor]:
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


def _municipalities(
    chk: _Checker,
    raw: RawInventory,
    gvars: Vars,
    fleet: str,
    fleet_domain: str,
    network: model.Network,
    profiles: Mapping[str, model.Profile],
    hypervisors: Mapping[str, model.Hypervisor],
) -> tuple[model.Municipality, ...]:
    slugs = raw.groups.get("municipalities", [])
    hosts = [(s, raw.vars_for_host(s)) for s in slugs]
    ips = _allocate_ips(chk, hosts, network)
    macs = _allocate_macs(chk, hosts, fleet)
    default_hv = sorted(hypervisors)[0] if hypervisors else ""
    seen_domains: dict[str, str] = {}
    out = []
    for slug, hv in hosts:
        if not DNS_LABEL.fullmatch(slug) or len(f"{fleet}-{slug}") > 63:
            chk.add(None, slug, "name", "must be a DNS label (a-z, 0-9, '-') and a valid VM name")
        display = hv.get("display_name")
        if not isinstance(display, str) or not display.strip():
            chk.add(hv, slug, "display_name", f"missing or not a non-empty string: {display!r}")
            display = slug
        domain = hv.get("domain", f"{slug}.{fleet_domain}")
        if not is_fqdn(domain):
            chk.add(hv, slug, "domain", f"not a valid domain name: {domain!r}")
        elif domain in seen_domains:
            chk.add(hv, slug, "domain", f"{domain} is also used by {seen_domains[domain]}")
        else:
            seen_domains[domain] = slug
        profile = _profile_of(chk, hv, slug, profiles, gvars)
        hyp = hv.get("hypervisor", default_hv)
        if hyp not in hypervisors:
            chk.add(
                hv, slug, "hypervisor", f"unknown hypervisor {hyp!r} (known: {sorted(hypervisors)})"
            )
        modules = _modules_of(chk, hv, slug, gvars)
        language, colour, logo = _presentation_of(chk, hv, slug)
        patch_window = hv.get("patch_window", "")
        if problem := schedule.window_error(patch_window):
            chk.add(hv, slug, "patch_window", problem)
            patch_window = ""
        out.append(
            model.Municipality(
                slug=slug,
                vm_name=f"{fleet}-{slug}",
                display_name=display,
                domain=str(domain),
                profile=profile,
                modules=modules,
                ip=ips[slug],
                mac=macs[slug],
                hypervisor=str(hyp),
                language=language,
                branding_colour=colour,
                branding_logo=logo,
                datasets=_datasets_of(chk, raw, hv, slug, modules),
                patch_window=str(patch_window or ""),
                watch_services=chk.shared(hv, slug, "watch_services", opsfields.watch_services),
                patch_keep_snapshots=chk.shared(
                    hv, slug, "patch_keep_snapshots", opsfields.patch_keep_snapshots
                ),
                apt_sources=chk.shared(hv, slug, "apt_sources", opsfields.apt_sources),
                vars=dict(hv.values),
                origin=dict(hv.origin),
            )
        )
    return tuple(out)


def _presentation_of(chk: _Checker, hv: Vars, slug: str) -> tuple[str, str, str]:
    language = hv.get("language", "el")
    if language not in model.LANGUAGES:
        chk.add(hv, slug, "language", f"must be one of {list(model.LANGUAGES)}, got {language!r}")
        language = "el"
    branding = hv.get("branding") or {}
    if not isinstance(branding, dict):
        chk.add(hv, slug, "branding", "must be a mapping with colour and logo")
        branding = {}
    colour = branding.get("colour", "#1f4e79")
    if not isinstance(colour, str) or not COLOUR_RE.fullmatch(colour):
        chk.add(hv, slug, "branding.colour", f"must be a colour like '#1f4e79', got {colour!r}")
        colour = "#1f4e79"
    logo = branding.get("logo", "")
    if not isinstance(logo, str) or (logo and not LOGO_RE.fullmatch(logo)):
        chk.add(hv, slug, "branding.logo", f"must be an https:// URL or a /path, got {logo!r}")
        logo = ""
    return str(language), colour.lower(), logo


def _datasets_of(
    chk: _Checker, raw: RawInventory, hv: Vars, slug: str, modules: tuple[str, ...]
) -> tuple[str, ...]:
    """Open-data CSVs in host_vars/<slug>/data/.

    Without a `datasets` list, whatever CSVs are there (maybe none: onboarding stays one
    entry); every dataset a list names must have its CSV.
    """
    data_dir = raw.hosts_file.parent / "host_vars" / slug / "data"
    present = sorted(p.stem for p in data_dir.glob("*.csv")) if data_dir.is_dir() else []
    wanted = hv.get("datasets", present)
    if not isinstance(wanted, list) or not all(isinstance(d, str) for d in wanted):
        chk.add(hv, slug, "datasets", "must be a list of dataset names")
        return ()
    if "opendata" not in modules:
        return tuple(wanted)
    for name in wanted:
        csv = data_dir / f"{name}.csv"
        if not csv.is_file():
            chk.add(hv, slug, "datasets", f"missing CSV {csv}")
            continue
        try:
            header = csv.read_text(encoding="utf-8").splitlines()[:1]
        except (OSError, UnicodeDecodeError) as exc:
            chk.add(hv, slug, "datasets", f"{csv} is not readable UTF-8 text: {exc}")
            continue
        if not header or not header[0].strip():
            chk.add(hv, slug, "datasets", f"{csv} has no header row")
    return tuple(wanted)


def _profile_of(
    chk: _Checker, hv: Vars, slug: str, profiles: Mapping[str, model.Profile], gvars: Vars
) -> model.Profile:
    name = hv.get("profile", gvars.get("default_profile", next(iter(profiles), "small")))
    if name not in profiles:
        chk.add(hv, slug, "profile", f"unknown profile {name!r} (known: {sorted(profiles)})")
        return next(iter(profiles.values()), model.Profile("small", 1, 1024, 10))
    return profiles[name]


def _modules_of(chk: _Checker, hv: Vars, slug: str, gvars: Vars) -> tuple[str, ...]:
    mods = hv.get("modules", gvars.get("default_modules", ["portal", "opendata"]))
    if not isinstance(mods, list):
        chk.add(hv, slug, "modules", f"must be a list, got {mods!r}")
        return ()
    for mod in mods:
        if mod not in model.MODULES:
            chk.add(hv, slug, "modules", f"unknown module {mod!r} (known: {list(model.MODULES)})")
    return tuple(str(m) for m in mods if m in model.MODULES)


def _allocate_ips(
    chk: _Checker, hosts: list[tuple[str, Vars]], net: model.Network
) -> dict[str, ipaddress.IPv4Address]:
    """Explicit IPs first; the rest get a stable hash-chosen free address."""
    reserved = {net.cidr.network_address, net.cidr.broadcast_address, net.gateway}
    taken: dict[ipaddress.IPv4Address, str] = {}
    out: dict[str, ipaddress.IPv4Address] = {}
    for slug, hv in hosts:
        if "ip" not in hv.values:
            continue
        try:
            ip = ipaddress.IPv4Address(str(hv.get("ip")))
        except ValueError:
            chk.add(hv, slug, "ip", f"not an IPv4 address: {hv.get('ip')!r}")
            continue
        if ip not in net.cidr:
            chk.add(hv, slug, "ip", f"{ip} is outside the fleet network {net.cidr}")
        elif ip in reserved:
            chk.add(hv, slug, "ip", f"{ip} is the network, gateway or broadcast address")
        elif ip in taken:
            chk.add(hv, slug, "ip", f"{ip} is also used by {taken[ip]}")
        else:
            taken[ip] = slug
        out[slug] = ip
    first = 10 if net.cidr.num_addresses > 32 else 2
    pool = [a for a in list(net.cidr)[first:-1] if a not in reserved]
    for slug, _ in sorted(hosts, key=lambda h: (_stable_int("ip", h[0]), h[0])):
        if slug in out:
            continue
        free = [a for a in pool if a not in taken]
        if not free:
            chk.add(None, slug, "ip", f"no free address left in {net.cidr}")
            out[slug] = net.gateway
            continue
        start = _stable_int("ip", slug) % len(pool)
        ip = next(
            pool[(start + i) % len(pool)]
            for i in range(len(pool))
            if pool[(start + i) % len(pool)] not in taken
        )
        taken[ip] = slug
        out[slug] = ip
    return out


def _allocate_macs(chk: _Checker, hosts: list[tuple[str, Vars]], fleet: str) -> dict[str, str]:
    taken: dict[str, str] = {}
    out: dict[str, str] = {}
    for slug, hv in hosts:
        if "mac" in hv.values:
            mac = str(hv.get("mac")).lower()
            if not MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1:
                chk.add(hv, slug, "mac", f"not a unicast MAC address: {hv.get('mac')!r}")
            elif mac in taken:
                chk.add(hv, slug, "mac", f"{mac} is also used by {taken[mac]}")
            taken[mac] = slug
            out[slug] = mac
    for slug, _ in sorted(hosts, key=lambda h: h[0]):
        if slug in out:
            continue
        n = _stable_int("mac", fleet, slug)
        while True:
            b = (n % (1 << 24)).to_bytes(3, "big")
            mac = "52:54:00:" + ":".join(f"{x:02x}" for x in b)
            if mac not in taken:
                break
            n += 1
        taken[mac] = slug
        out[slug] = mac
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

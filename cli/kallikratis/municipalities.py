"""The municipality entries of an inventory: names, domains, sizes, modules, addresses.

Each entry's IP and MAC get stable hash-chosen defaults that never collide; explicit values
override. Problems are collected by the :class:`~kallikratis.checker.Checker`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from kallikratis import backupfields, endpointfields, model, opsfields, portalfields, schedule
from kallikratis.checker import DNS_LABEL, Checker, is_fqdn
from kallikratis.errors import Problem
from kallikratis.varsfiles import RawInventory, Vars

COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
LOGO_RE = re.compile(r"^(https://[^\s\"'<>]+|/[^\s\"'<>]*)$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def load_municipalities(
    chk: Checker,
    raw: RawInventory,
    gvars: Vars,
    fleet: str,
    fleet_domain: str,
    network: model.Network,
    profiles: Mapping[str, model.Profile],
    hypervisors: Mapping[str, model.Hypervisor],
) -> tuple[model.Municipality, ...]:
    tenants = raw.groups.get("municipalities", [])
    central = raw.groups.get("central", [])
    for slug in sorted(set(tenants) & set(central)):
        chk.add(None, slug, "groups", "is in both `municipalities` and `central`: pick one")
    slugs = [*tenants, *(c for c in central if c not in tenants)]
    hosts = [(s, raw.vars_for_host(s)) for s in slugs]
    ips = _allocate_ips(chk, hosts, network, {})
    macs = _allocate_macs(chk, hosts, fleet)
    default_hv = sorted(hypervisors)[0] if hypervisors else ""
    seen_domains: dict[str, str] = {}
    out = []
    for slug, hv in hosts:
        if not DNS_LABEL.fullmatch(slug) or len(model.vm_name(fleet, slug)) > 63:
            chk.add(None, slug, "name", "must be a DNS label (a-z, 0-9, '-') and a valid VM name")
        roles = _central_roles_of(chk, hv, slug) if slug in central and slug not in tenants else ()
        display = hv.get("display_name", f"Kallikratis {slug}" if roles else None)
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
        modules = _modules_of(chk, hv, slug, gvars) if not roles else _no_modules(chk, hv, slug)
        language, colour, logo = _presentation_of(chk, hv, slug)
        patch_window = hv.get("patch_window", "")
        if problem := schedule.window_error(patch_window):
            chk.add(hv, slug, "patch_window", problem)
            patch_window = ""
        out.append(
            model.Municipality(
                slug=slug,
                vm_name=model.vm_name(fleet, slug),
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
                datasets=_datasets_of(chk, raw, hv, slug, modules) if not roles else (),
                patch_window=str(patch_window or ""),
                watch_services=chk.shared(hv, slug, "watch_services", opsfields.watch_services),
                patch_keep_snapshots=chk.shared(
                    hv, slug, "patch_keep_snapshots", opsfields.patch_keep_snapshots
                ),
                patch_snapshot_max_age=chk.shared(
                    hv, slug, "patch_snapshot_max_age", opsfields.patch_snapshot_max_age
                ),
                apt_sources=chk.shared(hv, slug, "apt_sources", opsfields.apt_sources),
                backup_keep=chk.shared(hv, slug, "backup_keep", backupfields.backup_keep),
                backup_remote=chk.shared(hv, slug, "backup_remote", backupfields.backup_remote),
                tls=chk.shared(hv, slug, "tls", endpointfields.tls_mode),
                contact=chk.shared(hv, slug, "contact", portalfields.contact),
                comment_ip_retention_days=chk.shared(
                    hv,
                    slug,
                    "portal_comment_ip_retention_days",
                    portalfields.comment_ip_retention_days,
                ),
                logo_file=_logo_of(chk, raw, slug),
                central_roles=roles,
                backup_volume_gib=_backup_volume_of(chk, hv, slug, roles),
                vars=dict(hv.values),
                origin=dict(hv.origin),
            )
        )
    return tuple(out)


def _presentation_of(chk: Checker, hv: Vars, slug: str) -> tuple[str, str, str]:
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


def _logo_of(chk: Checker, raw: RawInventory, slug: str) -> str:
    """host_vars/<slug>/logo.{svg,png,jpg}; a problem names the file itself."""
    host_dir = raw.hosts_file.parent / "host_vars" / slug
    path, problems = portalfields.logo_file(host_dir)
    files = [host_dir / n for n in portalfields.LOGO_NAMES if (host_dir / n).is_file()]
    for fld, msg in problems:
        chk.problems.append(Problem(str(files[0]), slug, fld, msg))
    return path


def _datasets_of(
    chk: Checker, raw: RawInventory, hv: Vars, slug: str, modules: tuple[str, ...]
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
    chk: Checker, hv: Vars, slug: str, profiles: Mapping[str, model.Profile], gvars: Vars
) -> model.Profile:
    name = hv.get("profile", gvars.get("default_profile", next(iter(profiles), "small")))
    if name not in profiles:
        chk.add(hv, slug, "profile", f"unknown profile {name!r} (known: {sorted(profiles)})")
        return next(iter(profiles.values()), model.Profile("small", 1, 1024, 10))
    return profiles[name]


def _modules_of(chk: Checker, hv: Vars, slug: str, gvars: Vars) -> tuple[str, ...]:
    mods = hv.get("modules", gvars.get("default_modules", ["portal", "opendata"]))
    if not isinstance(mods, list):
        chk.add(hv, slug, "modules", f"must be a list, got {mods!r}")
        return ()
    for mod in mods:
        if mod not in model.MODULES:
            chk.add(hv, slug, "modules", f"unknown module {mod!r} (known: {list(model.MODULES)})")
    return tuple(str(m) for m in mods if m in model.MODULES)


def _central_roles_of(chk: Checker, hv: Vars, slug: str) -> tuple[str, ...]:
    """What a central VM runs: `central_roles`, by default the role its name names."""
    default = [slug] if slug in model.CENTRAL_ROLES else None
    roles = hv.get("central_roles", default)
    known = list(model.CENTRAL_ROLES)
    if roles is None:
        chk.add(hv, slug, "central_roles", f"missing: a central VM lists what it runs ({known})")
        return ("unknown",)  # still central: one problem, not one per module field
    if not isinstance(roles, list) or not roles:
        chk.add(hv, slug, "central_roles", f"must be a non-empty list of {known}, got {roles!r}")
        return ("unknown",)
    for role in roles:
        if role not in model.CENTRAL_ROLES:
            chk.add(hv, slug, "central_roles", f"unknown central role {role!r} (known: {known})")
    if "hub" in roles and "control" in roles:
        # the hub is public; control holds the monitoring and the backups
        chk.add(hv, slug, "central_roles", "hub and control never share a VM: give each its own")
    return tuple(dict.fromkeys(str(r) for r in roles))


def _backup_volume_of(chk: Checker, hv: Vars, slug: str, roles: tuple[str, ...]) -> int:
    """control's own volume for the backup store; no other VM has one."""
    if "control" in roles:
        return chk.shared(hv, slug, "backup_volume_gib", backupfields.backup_volume_gib)
    if "backup_volume_gib" in chk.raw.host_vars.get(slug, Vars()).values:  # a group's: ignored
        chk.add(hv, slug, "backup_volume_gib", "only the control VM holds the backup store")
    return 0


def _no_modules(chk: Checker, hv: Vars, slug: str) -> tuple[str, ...]:
    if "modules" in hv.values:
        chk.add(hv, slug, "modules", "a central VM runs central_roles, not municipal modules")
    return ()


def reallocate(
    fleet: model.Fleet, known: Mapping[str, ipaddress.IPv4Address]
) -> tuple[model.Municipality, ...]:
    """*fleet*'s municipalities with the default addresses allocated after *known* (slug ->
    the address its VM has); the inventory was validated already, nothing is read again."""
    chk = Checker(RawInventory(fleet.inventory / "hosts.yml"))
    hosts = [(m.slug, Vars(dict(m.vars))) for m in fleet.municipalities]
    ips = _allocate_ips(chk, hosts, fleet.network, known)
    return tuple(dataclasses.replace(m, ip=ips[m.slug]) for m in fleet.municipalities)


def _allocate_ips(
    chk: Checker,
    hosts: list[tuple[str, Vars]],
    net: model.Network,
    known: Mapping[str, ipaddress.IPv4Address],
) -> dict[str, ipaddress.IPv4Address]:
    """Explicit IPs first, then the addresses existing VMs have (*known*), then a stable
    hash-chosen free address for each of the rest."""
    reserved = {net.cidr.network_address, net.cidr.broadcast_address, net.gateway}
    taken: dict[ipaddress.IPv4Address, str] = {}
    out: dict[str, ipaddress.IPv4Address] = {}
    for slug, hv in hosts:
        if "ip" in hv.values:
            _explicit_ip(chk, slug, hv, net, reserved, taken, out)
    first = 10 if net.cidr.num_addresses > 32 else 2
    pool = [a for a in list(net.cidr)[first:-1] if a not in reserved]
    in_pool = set(pool)
    for slug, _ in sorted(hosts):
        have = known.get(slug)
        if slug not in out and have is not None and have in in_pool and have not in taken:
            taken[have] = slug
            out[slug] = have
    for slug, _ in sorted(hosts, key=lambda h: (_stable_int("ip", h[0]), h[0])):
        if slug in out:
            continue
        if len(taken) >= len(pool) and all(a in taken for a in pool):
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


def _explicit_ip(
    chk: Checker,
    slug: str,
    hv: Vars,
    net: model.Network,
    reserved: set[ipaddress.IPv4Address],
    taken: dict[ipaddress.IPv4Address, str],
    out: dict[str, ipaddress.IPv4Address],
) -> None:
    value: Any = hv.get("ip")
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        chk.add(hv, slug, "ip", f"not an IPv4 address: {value!r}")
        return
    if ip not in net.cidr:
        chk.add(hv, slug, "ip", f"{ip} is outside the fleet network {net.cidr}")
    elif ip in reserved:
        chk.add(hv, slug, "ip", f"{ip} is the network, gateway or broadcast address")
    elif ip in taken:
        chk.add(hv, slug, "ip", f"{ip} is also used by {taken[ip]}")
    else:
        taken[ip] = slug
    out[slug] = ip


def _allocate_macs(chk: Checker, hosts: list[tuple[str, Vars]], fleet: str) -> dict[str, str]:
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

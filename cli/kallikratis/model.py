"""The fleet as typed, frozen values. Built by :mod:`kallikratis.inventory`; pure, no I/O."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kallikratis.errors import UsageError

#: XML namespace of the <metadata> element Kallikratis writes into every domain it owns.
METADATA_NS = "https://kallikratis.dev/xmlns/domain/1"
MODULES = ("portal", "opendata", "education")
LANGUAGES = ("el", "en")
DOMAIN_TYPES = ("kvm", "qemu")
NETWORK_MODES = ("nat", "route", "isolated", "bridge")
#: who issues a municipality's TLS certificate: the fleet CA on the controller (default), or an
#: ACME server through certbot on the VM
TLS_MODES = ("fleet-ca", "acme")
#: how a municipality's VM is fenced off from its neighbours on the shared network: an isolated
#: bridge port (no frame from one tenant reaches another) and libvirt's clean-traffic nwfilter
#: bound to the VM's own IP and MAC (no IP, MAC or ARP spoofing). Part of the VM spec, so that
#: `plan` shows a VM made before it as changed and `up` brings it in.
TENANT_ISOLATION = "isolated-port+clean-traffic"
#: the center's own VMs (inventory group `central`) are not tenants: their port is not isolated
#: (control must reach every municipality's node exporter), but they are anti-spoofing filtered
CENTRAL_ISOLATION = "clean-traffic"
#: what a central VM can be (its `central_roles`): `control` = monitoring, the fleet scorecard
#: and (later) the backup store; management traffic only, no public service. `hub` = the public
#: interoperability hub (roles/hub): never on the same VM as `control`
CENTRAL_ROLES = ("control", "hub")
NWFILTER = "clean-traffic"
DISK_SUFFIX = ".qcow2"
SEED_SUFFIX = "-seed.iso"
#: control's own volume for the backup store (an empty qcow2, ext4 inside, mounted at
#: /srv/backups by roles/backupstore); the guest finds it by its serial
DATA_SUFFIX = "-backups.qcow2"
DATA_SERIAL = "kk-backups"


def vm_name(fleet: str, slug: str) -> str:
    """The libvirt name of a municipality's VM (domain) in *fleet*."""
    return f"{fleet}-{slug}"


def volume_names(vm: str) -> tuple[str, str]:
    """The VM's (disk, seed) volume names in the storage pool."""
    return f"{vm}{DISK_SUFFIX}", f"{vm}{SEED_SUFFIX}"


def data_volume_name(vm: str) -> str:
    """The name of control's backup-store volume in the storage pool."""
    return f"{vm}{DATA_SUFFIX}"


def slug_of(fleet: str, name: str) -> str | None:
    """The reverse: the slug a domain or a disk/seed/data volume name of *fleet* belongs to."""
    base = name.removesuffix(SEED_SUFFIX).removesuffix(DATA_SUFFIX).removesuffix(DISK_SUFFIX)
    prefix = vm_name(fleet, "")
    return base[len(prefix) :] if base.startswith(prefix) else None


@dataclass(frozen=True)
class Profile:
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int


@dataclass(frozen=True)
class Network:
    name: str
    mode: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dns: tuple[str, ...]
    bridge: str
    #: the controller's own address on the fleet network (libvirt's side of a managed network):
    #: the one source of management traffic (SSH, node exporter) that every VM accepts
    controller: ipaddress.IPv4Address

    @property
    def managed(self) -> bool:
        """True when libvirt runs the network (and its DHCP server)."""
        return self.mode != "bridge"


@dataclass(frozen=True)
class StoragePool:
    name: str
    path: str


@dataclass(frozen=True)
class Acme:
    """The fleet's ACME account (for municipalities with tls: acme)."""

    directory: str
    email: str
    #: controller path of a PEM bundle the VMs trust for the ACME server's HTTPS ("" = system)
    ca_bundle: str = ""
    #: controller path of the PEM roots the issued certificates chain to ("" = system)
    roots: str = ""


@dataclass(frozen=True)
class Alerts:
    """Where the monitoring on `control` sends alerts besides its own alert log."""

    email: str = ""
    webhook_url: str = ""
    smtp_smarthost: str = ""


@dataclass(frozen=True)
class BackupRemote:
    """The off-site second copy (``backup_remote``): a borg server run by someone else.

    ``url`` is the base ``ssh://user@host[:port]/absolute/path``; each municipality's
    repository is ``<path>/<slug>`` under it. ``host_key`` ("type base64") is pinned on the
    VMs: they never trust the remote on first use.
    """

    url: str
    user: str
    host: str
    port: int
    path: str
    host_key: str

    def repository(self, slug: str) -> str:
        """*slug*'s repository as borg on the VM names it."""
        return f"ssh://{self.user}@{self.host}:{self.port}{self.path}/{slug}"

    def repository_path(self, slug: str) -> str:
        """*slug*'s repository on the remote's disk (its forced command restricts to it)."""
        return f"{self.path}/{slug}"

    def known_hosts_line(self) -> str:
        """OpenSSH's known_hosts line: a port-22 host plain, any other as [host]:port."""
        bare = self.host.strip("[]")
        name = bare if self.port == 22 else f"[{bare}]:{self.port}"
        return f"{name} {self.host_key}"


@dataclass(frozen=True)
class Hypervisor:
    name: str
    uri: str
    domain_type: str


@dataclass(frozen=True)
class Municipality:
    slug: str
    vm_name: str
    display_name: str
    domain: str
    profile: Profile
    modules: tuple[str, ...]
    ip: ipaddress.IPv4Address
    mac: str
    hypervisor: str
    language: str = "el"
    branding_colour: str = "#1f4e79"
    branding_logo: str = ""
    datasets: tuple[str, ...] = ()
    #: maintenance window for scheduled patch runs, e.g. "Sun 02:00-05:00"; "" = any time
    patch_window: str = ""
    #: systemd units that must be active after a deploy or a patch run (checked by verify)
    watch_services: tuple[str, ...] = ()
    #: how many pre-patch snapshots the VM keeps
    patch_keep_snapshots: int = 1
    #: seconds after which a pre-patch snapshot is deleted (patch runs, `snapshots prune`)
    patch_snapshot_max_age: int = 7 * 86400
    #: backups: archives kept per period after each prune ({daily, weekly, monthly})
    backup_keep: Mapping[str, int] = field(
        default_factory=lambda: {"daily": 7, "weekly": 4, "monthly": 6}, hash=False
    )
    #: backups: the off-site second copy (None = none)
    backup_remote: BackupRemote | None = None
    #: deb822 apt sources (name, uris, suites, components, signed_by); () = the image's own
    apt_sources: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    #: who issues the TLS certificate (TLS_MODES)
    tls: str = "fleet-ca"
    #: the portal's contact details (portalfields.CONTACT_KEYS; absent keys are not shown)
    contact: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: days after which commenters' IP addresses are erased from the portal
    comment_ip_retention_days: int = 30
    #: the logo file in host_vars/<slug>/ (controller path), "" for none
    logo_file: str = ""
    #: the center's own VM (inventory group `central`) and what it runs; () for a municipality
    central_roles: tuple[str, ...] = ()
    #: GiB of control's own backup-store volume (0: none, the repositories on the root disk)
    backup_volume_gib: int = 0
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    #: variable name -> the file it was defined in (for problems found after loading)
    origin: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_central(self) -> bool:
        return bool(self.central_roles)

    @property
    def isolation(self) -> str:
        return CENTRAL_ISOLATION if self.is_central else TENANT_ISOLATION

    @property
    def disk_volume(self) -> str:
        return volume_names(self.vm_name)[0]

    @property
    def seed_volume(self) -> str:
        return volume_names(self.vm_name)[1]

    @property
    def data_volume(self) -> str:
        """control's backup-store volume ("" when the VM has none)."""
        return data_volume_name(self.vm_name) if self.backup_volume_gib else ""


@dataclass(frozen=True)
class Fleet:
    name: str
    domain: str
    inventory: Path
    network: Network
    pool: StoragePool
    image: str
    admin_user: str
    admin_ssh_keys: tuple[str, ...]
    profiles: Mapping[str, Profile]
    hypervisors: Mapping[str, Hypervisor]
    municipalities: tuple[Municipality, ...]
    #: networks (CIDR) allowed on the admin paths (WordPress, Kolibri); default: everyone
    admin_allow: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    acme: Acme | None = None
    alerts: Alerts = Alerts()
    #: days control keeps a destroyed municipality's repository (group_vars, fleet-wide)
    backup_retention_after_destroy: int = 90
    #: the restore tests' isolated (host-only) network (`kallikratis restore-test`)
    restore_test_network: ipaddress.IPv4Network = ipaddress.IPv4Network("10.77.250.0/28")

    @property
    def tenants(self) -> tuple[Municipality, ...]:
        """The municipalities proper (``municipalities`` holds every managed VM)."""
        return tuple(m for m in self.municipalities if not m.is_central)

    @property
    def central(self) -> tuple[Municipality, ...]:
        """The center's own VMs (inventory group ``central``)."""
        return tuple(m for m in self.municipalities if m.is_central)

    @property
    def control(self) -> Municipality | None:
        """The central VM that runs the monitoring (role ``control``), if the fleet has one."""
        return next((m for m in self.central if "control" in m.central_roles), None)

    @property
    def hub(self) -> Municipality | None:
        """The central VM that runs the interoperability hub (role ``hub``), if any."""
        return next((m for m in self.central if "hub" in m.central_roles), None)

    @property
    def management_sources(self) -> tuple[ipaddress.IPv4Network, ...]:
        """Where SSH and the node exporter of a VM may be reached from.

        The controller and the central ``control`` VMs (monitoring); never the fleet subnet, so
        that one municipality's VM cannot reach another's management ports.
        """
        sources = [self.network.controller]
        sources += [m.ip for m in self.central if "control" in m.central_roles]
        return tuple(ipaddress.IPv4Network(f"{a}/32") for a in dict.fromkeys(sources))

    def admin_allows(self, address: ipaddress.IPv4Address) -> bool:
        """True when *address* may reach the admin paths (admin_allow)."""
        return any(address in ipaddress.ip_network(n) for n in self.admin_allow)

    def get(self, slug: str) -> Municipality:
        for m in self.municipalities:
            if m.slug == slug:
                return m
        raise UsageError(f"no municipality {slug!r} in inventory {self.inventory}")

    def select(self, names: Iterable[str], *, all_: bool = False) -> tuple[Municipality, ...]:
        """The municipalities named (in inventory order), or all of them."""
        names = list(names)
        if all_ or not names:
            return self.municipalities
        unknown = [n for n in names if n not in {m.slug for m in self.municipalities}]
        if unknown:
            known = ", ".join(m.slug for m in self.municipalities)
            raise UsageError(f"unknown municipality: {', '.join(unknown)} (known: {known})")
        return tuple(m for m in self.municipalities if m.slug in names)

    def hypervisor_of(self, m: Municipality) -> Hypervisor:
        return self.hypervisors[m.hypervisor]


def vm_spec(fleet: Fleet, m: Municipality, image_version: str) -> dict[str, Any]:
    """Everything that decides how a municipality's VM is built, as plain JSON-able data.

    Stored in the domain's metadata; its hash tells whether the VM matches the inventory.
    """
    hv = fleet.hypervisor_of(m)
    return {
        "slug": m.slug,
        "display_name": m.display_name,
        "domain": m.domain,
        "vcpus": m.profile.vcpus,
        "memory_mib": m.profile.memory_mib,
        "disk_gib": m.profile.disk_gib,
        "ip": str(m.ip),
        "mac": m.mac,
        "network": fleet.network.name,
        "domain_type": hv.domain_type,
        "image": fleet.image,  # the recipe; its version is kept apart (patch runs update VMs)
        "admin_user": fleet.admin_user,
        "admin_ssh_keys": sorted(fleet.admin_ssh_keys),
        "isolation": m.isolation,
        **({"central_roles": list(m.central_roles)} if m.is_central else {}),
        **({"backup_volume_gib": m.backup_volume_gib} if m.backup_volume_gib else {}),
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

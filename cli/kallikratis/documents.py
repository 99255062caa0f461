"""The documents that make a municipality's VM: cloud-init seed and domain XML, composed purely.

:func:`compose` reads nothing and writes nothing: `up` writes what it returns, `render` prints
it, and the benchmarks start VMs from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kallikratis import model, render
from kallikratis.keys import KeyPair
from kallikratis.seed import Seed

#: the documents `render --what` can show
NAMES = ("domain", "user-data", "meta-data", "network-config")


@dataclass(frozen=True)
class VmKeys:
    """The key material that goes into a VM: its own host key, the keys allowed to log in."""

    host: KeyPair
    client_public: str  # the automation key


@dataclass(frozen=True)
class VmDocuments:
    seed: Seed
    domain: str
    spec_hash: str

    @property
    def seed_hash(self) -> str:
        return self.seed.digest

    def text(self, name: str) -> str:
        """One document by its name in :data:`NAMES`."""
        return self.domain if name == "domain" else self.seed.files()[name]


def compose(
    fleet: model.Fleet,
    m: model.Municipality,
    keys: VmKeys,
    image_version: str,
    *,
    retired: bool = False,
) -> VmDocuments:
    """Every document `up` writes for *m*: the seed files and the domain XML.

    *retired*: the seed of a VM that has booted with its pinned host key. It carries neither
    the host's private key nor the automation key (the VM has both already; a rotation then
    changes no retired seed), tells cloud-init to keep the host keys it finds, and keeps the
    instance-id of the first-boot seed, so a reboot is not a new instance. The domain records
    it (``<kk:seed>retired</kk:seed>``) so that every later `up` writes this seed, never the
    first-boot one, as long as the VM keeps its disk.
    """
    spec = model.vm_spec(fleet, m, "")
    h = model.spec_hash(spec)
    ctx = {
        "vm": m,
        "fleet": fleet,
        "host_private_key": "" if retired else keys.host.private_openssh,
        "host_public_key": keys.host.public_openssh,
        "authorized_keys": [
            *([] if retired else [keys.client_public]),
            *fleet.admin_ssh_keys,
        ],
        "instance_id": f"{m.vm_name}-{h[:8]}",
    }
    seed = Seed(
        render.render("user-data.j2", **ctx),
        render.render("meta-data.j2", **ctx),
        render.render("network-config.j2", **ctx),
    )
    domain = render.render(
        "domain.xml.j2",
        vm=m,
        fleet=fleet,
        ns=model.METADATA_NS,
        domain_type=fleet.hypervisor_of(m).domain_type,
        image_version=image_version,
        spec_hash=h,
        seed_hash=seed.digest,
        spec_json=json.dumps(spec, sort_keys=True, ensure_ascii=False),
        host_public_key=keys.host.public_openssh,
        disk_volume=m.disk_volume,
        seed_volume=m.seed_volume,
        data_serial=model.DATA_SERIAL,
        nwfilter=model.NWFILTER,
        seed_retired=retired,
    )
    return VmDocuments(seed, domain, h)

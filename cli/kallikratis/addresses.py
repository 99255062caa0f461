"""The addresses VMs actually have, so that onboarding one municipality never moves another.

Default IPs are hash-chosen with probing: on its own that choice depends on which other
municipalities exist, so a new entry could take an address an existing VM holds. The actual
state decides first: the address in each of our domains' ``kk:spec`` (or, for a VM whose
domain is not defined yet, its DHCP reservation on the fleet network) is kept, and only
municipalities without either get a new default (see
:func:`kallikratis.municipalities.load_municipalities`). An explicit ``ip:`` in the inventory
always wins: that is a change somebody asked for.

Offline paths (``validate --offline``, ``render`` without libvirtd) have no state: they use
the deterministic allocation and say so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from kallikratis import inventory, model, municipalities
from kallikratis.errors import HypervisorError
from kallikratis.hypervisor import LibvirtBackend

log = logging.getLogger(__name__)
#: slug -> address, JSON, handed by `kallikratis` to the vars plugin under ansible-runner
ENV = "KALLIKRATIS_ADDRESSES"
Known = dict[str, ipaddress.IPv4Address]


def actual(fleet: model.Fleet, backend: Callable[[str], LibvirtBackend]) -> tuple[Known, list[str]]:
    """slug -> address our VMs of *fleet* have, and the hypervisors that could not be read."""
    known: Known = {}
    unreachable = []
    for hv in sorted(fleet.hypervisors):
        try:
            be = backend(hv)
            reserved = {}
            if fleet.network.managed and be.network_exists(fleet.network.name):
                reserved = {n: ip for n, ip in be.dhcp_hosts(fleet.network.name).values()}
            for slug, ip in reserved.items():
                _put(known, slug, ip)
            for dom in be.domains(fleet.name):
                _put(known, dom.slug, str(dom.spec.get("ip", "")))  # the domain wins
        except HypervisorError as exc:
            log.info("addresses of %s unknown (%s): default allocation", hv, exc.message)
            unreachable.append(hv)
    return known, unreachable


def _put(known: Known, slug: str, ip: str) -> None:
    with contextlib.suppress(ValueError):  # not an address: nothing known
        known[slug] = ipaddress.IPv4Address(ip)


def settle(fleet: model.Fleet, known: Mapping[str, object]) -> model.Fleet:
    """*fleet* with the addresses its VMs have; the same object when nothing differs."""
    have = {m.slug: m.ip for m in fleet.municipalities}
    mine = {s: ipaddress.IPv4Address(str(ip)) for s, ip in known.items() if s in have}
    if all(have[s] == ip for s, ip in mine.items()):
        return fleet
    return dataclasses.replace(fleet, municipalities=municipalities.reallocate(fleet, mine))


def load_actual(
    path: str | Path, backend: Callable[[str], LibvirtBackend] | None = None
) -> model.Fleet:
    """The inventory at *path* with the addresses its VMs actually have."""
    from kallikratis.hypervisor import connect

    fleet = inventory.load(path)
    if backend is not None:
        return settle(fleet, actual(fleet, backend)[0])
    opened: dict[str, LibvirtBackend] = {}

    def own(hv: str) -> LibvirtBackend:
        if hv not in opened:
            opened[hv] = connect(fleet.hypervisors[hv].uri)
        return opened[hv]

    try:
        return settle(fleet, actual(fleet, own)[0])
    finally:
        for be in opened.values():
            be.close()


def to_env(fleet: model.Fleet) -> dict[str, str]:
    """The environment entry that hands *fleet*'s addresses to the vars plugin."""
    return {ENV: json.dumps({m.slug: str(m.ip) for m in fleet.municipalities}, sort_keys=True)}


def from_env() -> dict[str, str] | None:
    """The addresses `kallikratis` handed down, or None (plain ansible-playbook)."""
    text = os.environ.get(ENV)
    if text is None:
        return None
    data = json.loads(text)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

"""The provisioning engine: plan, up, destroy, status of municipality VMs.

Desired state is the inventory; actual state is libvirt (our <metadata> in each domain).
Every step is idempotent, so a run killed at any point converges when run again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kallikratis import (
    fleetstatus,
    golden,
    model,
    paths,
    recipes,
    render,
    seedcustody,
    vmresources,
)
from kallikratis.documents import VmKeys, compose
from kallikratis.errors import HypervisorError, KallikratisError
from kallikratis.fleetstatus import StatusRow, diff_spec
from kallikratis.hypervisor import DomainInfo, LibvirtBackend, connect
from kallikratis.keys import KeyStore
from kallikratis.ssh import SshTarget, wait_ready

log = logging.getLogger(__name__)
Progress = Callable[[str, str], None]  # (slug, phase)
SSH_TIMEOUT = 600.0


@dataclass(frozen=True)
class PlanItem:
    slug: str
    vm_name: str
    hypervisor: str
    action: str  # create | change | unchanged | orphan
    state: str
    changes: tuple[tuple[str, Any, Any], ...] = ()
    restart_pending: bool = False


@dataclass(frozen=True)
class UpResult:
    slug: str
    result: str  # created | changed | started | unchanged | failed
    detail: str = ""
    seconds: float = 0.0
    ssh_seconds: float | None = None


class Engine:
    def __init__(
        self,
        fleet: model.Fleet,
        *,
        state_dir: Path | None = None,
        images_dir: Path | None = None,
        image_cache: Path | None = None,
        backend_factory: Callable[[str], LibvirtBackend] = connect,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir or paths.state_dir()
        self.images_dir = images_dir or paths.images_dir()
        self.image_cache = image_cache or paths.image_cache_dir()
        self.keys = KeyStore(self.state_dir, fleet.name, fleet.inventory)
        self._factory = backend_factory
        self._backends: dict[str, LibvirtBackend] = {}
        self._lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------
    def backend_factory(self, uri: str) -> LibvirtBackend:
        """A connection to *uri*: this engine's own one when one of its hypervisors has it."""
        for name, hv in self.fleet.hypervisors.items():
            if hv.uri == uri:
                return self.backend(name)
        return self._factory(uri)

    def backend(self, hv_name: str) -> LibvirtBackend:
        with self._lock:
            if hv_name not in self._backends:
                self._backends[hv_name] = self._factory(self.fleet.hypervisors[hv_name].uri)
            return self._backends[hv_name]

    def recipe(self) -> recipes.Recipe:
        return recipes.load_recipe(self.images_dir, self.fleet.image)

    def spec(self, m: model.Municipality) -> dict[str, Any]:
        return model.vm_spec(self.fleet, m, "")

    def _live(self) -> dict[str, dict[str, DomainInfo]]:
        """hypervisor -> slug -> our domains of this fleet."""
        return {
            hv: {d.slug: d for d in self.backend(hv).domains(self.fleet.name)}
            for hv in self.fleet.hypervisors
        }

    def capacity(self) -> dict[str, tuple[int, int]]:
        out = {}
        for hv in self.fleet.hypervisors:
            info = self.backend(hv).host_info()
            out[hv] = (info.cpus, info.memory_mib)
        return out

    def target(self, m: model.Municipality) -> SshTarget:
        old = self.keys.state.previous_client_key  # offered too while a rotation is pending
        more = (old,) if old.exists() else ()
        return SshTarget(
            self.fleet.admin_user, str(m.ip), self.keys.client_key, self.keys.known_hosts, more
        )

    # -- plan ------------------------------------------------------------------------------
    def plan(self, selection: Iterable[model.Municipality]) -> list[PlanItem]:
        live = self._live()
        items = []
        for m in selection:
            dom = live[m.hypervisor].get(m.slug)
            spec = self.spec(m)
            at = (m.slug, m.vm_name, m.hypervisor)
            if dom is None:
                items.append(PlanItem(*at, "create", "absent"))
                continue
            pending = dom.running and dom.live_spec_hash not in ("", dom.spec_hash)
            if dom.spec_hash == model.spec_hash(spec):
                items.append(PlanItem(*at, "unchanged", dom.state, restart_pending=pending))
            else:
                changes = diff_spec(dom.spec, spec)
                items.append(PlanItem(*at, "change", dom.state, changes, dom.running))
        return items

    def orphans(self) -> list[PlanItem]:
        """Our domains and leftover volumes of this fleet whose municipality left the inventory."""
        known = {m.slug for m in self.fleet.municipalities}
        out = []
        for hv, doms in self._live().items():
            out += [
                PlanItem(s, d.name, hv, "orphan", d.state)
                for s, d in doms.items()
                if s not in known
            ]
            vm_names = {d.name for d in doms.values()} | {
                m.vm_name for m in self.fleet.municipalities
            }
            # another fleet's VM whose name starts like ours (a restore test's <fleet>-rt-*)
            vm_names |= {d.name for d in self.backend(hv).domains()}
            for vol in self.backend(hv).volumes(self.fleet.pool.name):
                slug = model.slug_of(self.fleet.name, vol.name)
                if slug is None or any(o.slug == slug for o in out):
                    continue
                base = model.vm_name(self.fleet.name, slug)
                if base not in vm_names:
                    out.append(PlanItem(slug, base, hv, "orphan", "volumes only"))
        return out

    # -- up --------------------------------------------------------------------------------
    def prepare(
        self, hv: str, progress: Progress, need_image: bool = True
    ) -> golden.PublishedImage | None:
        """Network, pool and (when VMs are to be created) the golden image on one hypervisor."""
        be = self.backend(hv)
        net = self.fleet.network
        hosts = [m for m in self.fleet.municipalities if m.hypervisor == hv]
        be.ensure_pool(self.fleet.pool.name, render.render("pool.xml.j2", pool=self.fleet.pool))
        if net.managed:
            be.ensure_network(
                net.name, render.render("network.xml.j2", net=net, fleet=self.fleet, hosts=hosts)
            )
        if not need_image:
            return None
        be.require_nwfilter(model.NWFILTER)
        return golden.ensure_published(
            be,
            self.fleet.pool.name,
            self.recipe(),
            self.image_cache,
            lambda msg: progress("*", msg),
        )

    def up(
        self,
        selection: Iterable[model.Municipality],
        progress: Progress,
        *,
        restart: bool = False,
        wait: bool = True,
        parallel: int = 8,
    ) -> list[UpResult]:
        selection = list(selection)
        self.keys.ensure_client_key()
        for m in selection:  # keys first, serially: one known_hosts writer
            self.keys.host_key(m.slug)
        self.write_known_hosts()
        live = self._live()
        golden_by_hv = {}
        for hv in sorted({m.hypervisor for m in selection}):
            # the golden image is needed only where a VM is still to be created
            creating = any(m.slug not in live[hv] for m in selection if m.hypervisor == hv)
            golden_by_hv[hv] = self.prepare(hv, progress, need_image=creating)
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(selection)))) as pool:
            futures = [
                pool.submit(self._up_one, m, golden_by_hv[m.hypervisor], progress, restart, wait)
                for m in selection
            ]
            return [f.result() for f in futures]

    def write_known_hosts(self) -> None:
        """This inventory's municipalities in the fleet's known_hosts (others' runs kept)."""
        entries = {}
        for m in self.fleet.municipalities:
            pair = self.keys.host_key(m.slug, create=False)
            entries[m.slug] = (str(m.ip), pair.public_openssh if pair else None)
        self.keys.write_known_hosts(entries)

    def _up_one(
        self,
        m: model.Municipality,
        image: golden.PublishedImage | None,
        progress: Progress,
        restart: bool,
        wait: bool,
    ) -> UpResult:
        start = time.monotonic()
        try:
            result, detail = self._converge(m, image, progress, restart)
            ssh_s = None
            if wait and result != "failed" and "restart pending" not in detail:
                progress(m.slug, "waiting for SSH")
                ssh_s = wait_ready(self.target(m), SSH_TIMEOUT)
                if ssh_s is None:
                    result, detail = "failed", f"SSH did not answer within {SSH_TIMEOUT:.0f} s"
                elif seedcustody.flush_guest(self, m) and seedcustody.retire(self, m):
                    result = "changed" if result == "unchanged" else result
                    detail = "; ".join(filter(None, [detail, "host private key left the seed"]))
            progress(m.slug, result)
            return UpResult(m.slug, result, detail, time.monotonic() - start, ssh_s)
        except KallikratisError as exc:
            progress(m.slug, "failed")
            return UpResult(m.slug, "failed", exc.message, time.monotonic() - start)

    def _converge(
        self,
        m: model.Municipality,
        image: golden.PublishedImage | None,
        progress: Progress,
        restart: bool,
    ) -> tuple[str, str]:
        be = self.backend(m.hypervisor)
        pool = self.fleet.pool.name
        host_key = self.keys.host_key(m.slug)
        if host_key is None:
            raise KallikratisError(f"{m.slug}: no host key")
        dom = be.domain(m.vm_name)
        if dom is None and image is None:
            raise KallikratisError(f"{m.slug}: no golden image to create the VM from")
        # a VM keeps the image it was born with; patch runs keep it current
        keys = VmKeys(host_key, self.keys.ensure_client_key())
        have_disk = be.volume(pool, m.disk_volume) is not None
        have_seed = be.volume(pool, m.seed_volume) is not None
        have_data = not m.data_volume or be.volume(pool, m.data_volume) is not None
        # a VM that booted with its key keeps a seed without it; a new disk needs the key again
        retired = dom is not None and dom.seed_retired and have_disk
        version = dom.image if dom else image.version  # type: ignore[union-attr]
        docs = compose(self.fleet, m, keys, version, retired=retired)
        vmresources.reserve_address(be, self.fleet, m, True)
        if (
            dom
            and dom.spec_hash == docs.spec_hash
            and dom.seed_hash == docs.seed_hash
            and have_disk
            and have_seed
            and have_data
        ):
            if dom.running:
                return "unchanged", ""
            progress(m.slug, "starting")
            be.start_domain(m.vm_name)
            return "started", f"was {dom.state}"
        progress(m.slug, "writing seed")
        vmresources.write_seed(be, self.fleet, m, docs.seed)
        if not have_disk:
            if image is None:
                image = self.prepare(m.hypervisor, progress, need_image=True)
            assert image is not None
            progress(m.slug, "creating disk")
            vmresources.create_disk(be, self.fleet, m, image.path)
        if not have_data:
            progress(m.slug, "creating backup volume")
            vmresources.create_data_disk(be, self.fleet, m)
        progress(m.slug, "defining domain")
        be.define_domain(docs.domain)
        if dom is not None and dom.running:
            if not restart:
                return "changed", "restart pending (up --restart applies it)"
            progress(m.slug, "restarting")
            be.stop_domain(m.vm_name)
        progress(m.slug, "starting")
        be.start_domain(m.vm_name)
        return ("changed", "restarted") if dom else ("created", "")

    # -- destroy ---------------------------------------------------------------------------
    def destroy(self, slugs: Iterable[str], progress: Progress) -> list[UpResult]:
        by_slug = {m.slug: m for m in self.fleet.municipalities}
        orphans = {o.slug: o for o in self.orphans()}
        out = []
        for slug in slugs:
            start = time.monotonic()
            hv = by_slug[slug].hypervisor if slug in by_slug else orphans[slug].hypervisor
            be = self.backend(hv)
            vm_name = model.vm_name(self.fleet.name, slug)
            progress(slug, "removing domain")
            try:
                removed = be.remove_domain(vm_name)
                removed = vmresources.remove_volumes(be, self.fleet, vm_name) or removed
                if slug in by_slug:
                    m = by_slug[slug]
                    removed = vmresources.reserve_address(be, self.fleet, m, False) or removed
            except HypervisorError as exc:
                out.append(UpResult(slug, "failed", exc.message, time.monotonic() - start))
                continue
            self.keys.forget_host_key(slug)
            progress(slug, "destroyed" if removed else "absent")
            out.append(
                UpResult(slug, "destroyed" if removed else "absent", "", time.monotonic() - start)
            )
        self.write_known_hosts()
        return out

    # -- status ----------------------------------------------------------------------------
    def status(self) -> list[StatusRow]:
        """Each VM as libvirt sees it, with its drift from the inventory, and the orphans."""
        return fleetstatus.rows(self.fleet, self._live(), self.spec, self.orphans())

"""`kallikratis restore-test`: what proves the backups.

The latest archive of a municipality is restored into a THROWAWAY VM on an isolated network
(:mod:`kallikratis.restorefleet`: a derived one-member fleet, deployed by the usual machinery),
through the controller (:mod:`kallikratis.restoreinto`); then the verify suites and a content
check (:mod:`kallikratis.restorecontent`: the same posts, comments, users, uploads and
learners as the archive); then the throwaway is removed: VM, disk, seed, DHCP reservation, the
isolated network when no VM uses it any more, the derived fleet's secrets, keys and
known_hosts. Always: on failure and on Ctrl-C too (``finally``), and a leftover of a killed
run is removed before the next one starts. The original VM is never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kallikratis import addresses, model, restorefleet, siterun, verify, vmresources
from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest
from kallikratis.hypervisor import LibvirtBackend
from kallikratis.provision import Engine
from kallikratis.restorecontent import Content
from kallikratis.restoreinto import Transplant, actual_script, check_content, parse_actual
from kallikratis.stack import prepare_stack

log = logging.getLogger(__name__)
Phase = Callable[[str], None]


class RestoreTestError(KallikratisError):
    """Some restore test failed (the others ran)."""

    exit_code = 5


@dataclass
class RestoreTestOutcome:
    """One municipality's restore test."""

    slug: str
    archive: str = ""
    result: str = "failed"  # passed | failed
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    verify: str = ""  # passed | failed | "" (not reached)
    expected: dict[str, int] = field(default_factory=dict)
    actual: dict[str, int] = field(default_factory=dict)
    #: the archive's public content the check compared (post titles, comment ids, upload
    #: names and sizes); people's accounts only as counts (``expected``)
    content: dict[str, object] = field(default_factory=dict)
    detail: str = ""
    #: what the removal left behind ("" = nothing)
    leftover: str = ""


def verify_step(engine: Engine, t: model.Municipality) -> tuple[bool, str]:
    """The verify suites on the throwaway (not in maintenance: it serves like the original)."""
    checks, _ = verify.run(engine.fleet, [t], engine.state_dir, maintenance=False)
    mine = [c for c in checks if c.slug in (t.slug, "*")]
    bad = [c for c in mine if not c.passed]
    why = "; ".join(f"{c.name}: {c.message[:200]}" for c in bad[:3])
    return bool(mine) and not bad, why or ("no checks ran" if not mine else "")


def deploy_step(engine: Engine, t: model.Municipality, progress: Phase) -> None:
    """site.yml on the throwaway, as `deploy` runs it (secrets, TLS certificate first)."""
    prepare_stack(engine.fleet, engine.keys, engine.state_dir, [t])
    run = siterun.run_site(
        engine.fleet.inventory,
        [t],
        state_dir=engine.state_dir,
        progress=lambda _host, task: progress(f"deploy: {task}"[:60]),
        environment=addresses.to_env(engine.fleet),
    )
    host = run.hosts.get(t.slug)
    if run.not_started or host is None or host.result != "ok":
        failures = "; ".join(
            f"{task}: {msg[:200]}" for task, msg in (host.failures if host else [])[:3]
        )
        why = run.not_started or failures or "failed"
        raise KallikratisError(f"{why} (run artifacts: {run.artifacts.parent})")


class RestoreTest:
    """One municipality's restore test; the VM steps are methods (tests replace them)."""

    #: wait for SSH after `up` (off in tests on libvirt's test driver)
    wait = True

    def __init__(
        self,
        fleet: model.Fleet,
        m: model.Municipality,
        *,
        state_dir: Path,
        backend_factory: Callable[[str], LibvirtBackend],
        control: Guest | None,
        passphrase: Callable[[], str],
        progress: Phase = lambda _phase: None,
        keep_on_failure: bool = False,
    ) -> None:
        self.keep_on_failure = keep_on_failure
        self.fleet = fleet
        self.m = m
        self.state_dir = state_dir
        self._factory = backend_factory
        self._backends: dict[str, LibvirtBackend] = {}
        self.control = control
        self.passphrase = passphrase
        self.progress = progress
        self.engine: Engine | None = None
        self.t: model.Municipality | None = None
        self.expected = Content()

    def factory(self, uri: str) -> LibvirtBackend:
        """One connection per hypervisor, shared by the original's and the derived engine."""
        if uri not in self._backends:
            self._backends[uri] = self._factory(uri)
        return self._backends[uri]

    # -- the run -----------------------------------------------------------------------------
    def run(self, archive: str) -> RestoreTestOutcome:
        o = RestoreTestOutcome(self.m.slug, archive)
        start = time.monotonic()
        try:
            self._phase(o, "removing leftovers", self.remove)
            self._phase(o, "throwaway fleet", self.derive)
            self._phase(o, "up", self.up)
            self._phase(o, "deploy", self.deploy)
            self._phase(o, "restore", lambda: self.restore(archive))
            self._phase(o, "verify", lambda: self._verify(o))
            self._phase(o, "content check", lambda: self._content(o))
            o.result = "passed"
        except KallikratisError as exc:
            o.detail = exc.message
        except Exception as exc:  # noqa: BLE001 - one municipality's test fails alone
            log.exception("%s: restore test", self.m.slug)
            o.detail = f"unexpected error: {exc!r}"
        finally:
            try:
                if o.result != "passed" and self.keep_on_failure:
                    o.leftover = "kept for inspection (--keep-on-failure); the next run removes it"
                else:
                    self._phase(o, "removing the throwaway", self.remove)
            except KallikratisError as exc:
                o.leftover = exc.message
                o.result = "failed"
                o.detail = "; ".join(filter(None, [o.detail, f"removal: {exc.message}"]))
            o.seconds = time.monotonic() - start
        return o

    def _phase(self, o: RestoreTestOutcome, name: str, action: Callable[[], None]) -> None:
        self.progress(name)
        t = time.monotonic()
        try:
            action()
        except KallikratisError as exc:
            raise KallikratisError(f"{name}: {exc.message}") from exc
        finally:
            o.timings[name] = round(time.monotonic() - t, 1)

    # -- steps -------------------------------------------------------------------------------
    def derive(self) -> None:
        probe = Engine(self.fleet, state_dir=self.state_dir, backend_factory=self.factory)
        derived = restorefleet.load(self.fleet, self.m, self.state_dir, probe.keys)
        self.engine = Engine(derived, state_dir=self.state_dir, backend_factory=self.factory)
        self.t = derived.get(restorefleet.throwaway_slug(self.m.slug))

    def _ready(self) -> tuple[Engine, model.Municipality]:
        if self.engine is None or self.t is None:
            raise KallikratisError("the throwaway fleet was not made")
        return self.engine, self.t

    def up(self) -> None:
        engine, t = self._ready()
        (result,) = engine.up([t], lambda _s, phase: self.progress(f"up: {phase}"), wait=self.wait)
        if result.result == "failed":
            raise KallikratisError(result.detail)

    def deploy(self) -> None:
        deploy_step(*self._ready(), self.progress)

    def transplant(self, archive: str) -> Transplant:
        engine, t = self._ready()
        if self.control is None:
            raise KallikratisError("no control VM: the archive cannot be read")
        return Transplant(
            self.m.slug, archive, self.control, Guest(engine.target(t)), self.passphrase()
        )

    def restore(self, archive: str) -> None:
        _, t = self._ready()
        self.expected = self.transplant(archive).run(t)

    def verify(self) -> tuple[bool, str]:
        return verify_step(*self._ready())

    def actual(self) -> Content:
        """What the restored throwaway holds."""
        engine, t = self._ready()
        return parse_actual(Guest(engine.target(t)).run(actual_script(t), 600))

    def _verify(self, o: RestoreTestOutcome) -> None:
        ok, why = self.verify()
        o.verify = "passed" if ok else "failed"
        if not ok:
            raise KallikratisError(why)

    def _content(self, o: RestoreTestOutcome) -> None:
        actual = self.actual()
        o.expected, o.actual = self.expected.counts(), actual.counts()
        o.content = {
            "posts": dict(self.expected.posts),
            "comments": sorted(self.expected.comments),
            "uploads": dict(self.expected.uploads),
        }
        check_content(self.expected, actual)

    def remove(self) -> None:
        """The throwaway and everything of the derived fleet; nothing when nothing is left."""
        derived = restorefleet.fleet_name(self.fleet)
        slug = restorefleet.throwaway_slug(self.m.slug)
        vm = model.vm_name(derived, slug)
        for hv in self.fleet.hypervisors.values():
            be = self.factory(hv.uri)
            be.remove_domain(vm)
            vmresources.remove_volumes(be, self.fleet, vm)  # disk and seed, as destroy does
            if self.engine is not None and self.t is not None:  # the network may stay
                vmresources.reserve_address(be, self.engine.fleet, self.t, False)
            if not be.domains(derived):  # no other throwaway on it
                be.remove_network(restorefleet.network_name(self.fleet))
        restorefleet.remove(self.state_dir, self.fleet)
        self.engine = self.t = None

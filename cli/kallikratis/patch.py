"""Patch runs: OS updates and the stack deploy, wave by wave, each VM behind a snapshot.

For every municipality of a wave: list what is pending (packages, stack changes); then, if
anything is, maintenance mode on (citizens get the 503 notice, so nothing they write can be
lost by a revert), a libvirt snapshot with memory, ``apt-get dist-upgrade`` (needrestart
restarts services), the stack deploy, a reboot if the guest asks for one, the verify checks,
maintenance mode off, and old snapshots pruned. Any failure reverts the VM to its snapshot,
confirms it serves again, and marks it failed. The run stops once failures exceed the limit;
the municipalities it did not reach are reported as skipped.

Guests, deploys and verification are passed in (see :class:`Steps`), so the wave logic is
tested against libvirt's test driver without SSH or Ansible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from kallikratis import model, schedule
from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest, Upgrade
from kallikratis.hypervisor import SNAPSHOT_PREFIX, BackendFactory
from kallikratis.patchrevert import Reverts
from kallikratis.patchroom import Room
from kallikratis.patchwaves import allowed_failures, waves
from kallikratis.snapshotage import prune_expired

log = logging.getLogger(__name__)
Progress = Callable[[str, str], None]
#: per-slug (ok, changed tasks, why not ok) from a deploy; per-slug (ok, why not) from verify
DeployFn = Callable[[list[model.Municipality], bool], dict[str, tuple[bool, int, str]]]
VerifyFn = Callable[[list[model.Municipality], bool], dict[str, tuple[bool, str]]]
GuestFn = Callable[[model.Municipality], Guest]
RecordFn = Callable[["Outcome"], None]
TERMINAL = ("patched", "unchanged", "failed", "skipped", "planned")


@dataclass
class Outcome:
    slug: str
    result: str = "pending"  # patched | unchanged | failed | skipped | planned
    reason: str = ""
    upgrades: list[Upgrade] = field(default_factory=list)
    stack_changes: int | None = None  # tasks a deploy would change (None: not checked)
    was_in_maintenance: bool = False
    refused: bool = False  # no room for its snapshot: failed, but does not stop the run
    pruned: list[str] = field(default_factory=list)  # expired snapshots deleted (or not)
    snapshot: str = ""
    rebooted: bool = False
    reverted: bool = False
    seconds: float = 0.0
    wave: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def needs_patch(self) -> bool:
        return bool(self.upgrades or self.stack_changes or self.was_in_maintenance)

    def summary(self) -> str:
        parts = [str(u) for u in self.upgrades]
        if self.stack_changes:
            parts.append(f"stack: {self.stack_changes} task(s) changed")
        if self.rebooted:
            parts.append("rebooted")
        if self.pruned:
            parts.append(f"expired snapshots: {', '.join(self.pruned)}")
        if self.reason:
            parts.append(self.reason)
        return "; ".join(parts)


@dataclass(frozen=True)
class Options:
    security_only: bool = False
    canary: int = 1
    batch: str = "10"
    max_fail: str = "0"
    dry_run: bool = False
    scheduled: bool = False
    run_id: int = 0
    # after a reboot, slow services (Kolibri under TCG) may still be starting: a VM that was
    # rebooted and fails verify is verified once more after this many seconds
    settle_seconds: float = 90.0


@dataclass(frozen=True)
class Steps:
    guest: GuestFn
    deploy: DeployFn
    verify: VerifyFn


def snapshot_name(run_id: int, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when or time.time()))
    return f"{SNAPSHOT_PREFIX}{stamp}-r{run_id}"


class PatchRun(Reverts):
    def __init__(
        self,
        backend: BackendFactory,
        selection: Sequence[model.Municipality],
        options: Options,
        steps: Steps,
        progress: Progress,
        record: RecordFn | None = None,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.backend = backend
        self.selection = list(selection)
        self.opt = options
        self.steps = steps
        self.progress = progress
        self.record = record or (lambda _o: None)
        self.now = now
        self.outcomes = {m.slug: Outcome(m.slug) for m in self.selection}
        self.by_slug = {m.slug: m for m in self.selection}
        self.limit = allowed_failures(options.max_fail, len(self.selection))
        self.waves = waves([m.slug for m in self.selection], options.canary, options.batch)
        self._wave_start = 0.0
        self.room = Room(backend)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> list[Outcome]:
        self._prune_expired()
        failures = 0
        for number, wave in enumerate(self.waves, 1):
            if failures > self.limit:
                self._wave_start = 0.0
                for slug in wave:
                    self._finish(slug, "skipped", f"run stopped: {failures} failed")
                continue
            members = [self.by_slug[s] for s in wave]
            for m in members:
                self.outcomes[m.slug].wave = number
            self._wave(members)
            failures = sum(o.result == "failed" and not o.refused for o in self.outcomes.values())
        self._prune_expired()
        return [self.outcomes[m.slug] for m in self.selection]

    def _prune_expired(self) -> None:
        """Snapshots past patch_snapshot_max_age go, at the start and at the end of a run
        (never this run's own); a dry run only changes nothing."""
        if self.opt.dry_run:
            return
        spare = f"-r{self.opt.run_id}"
        for p in prune_expired(self.backend, self.selection, time.time(), spare=spare):
            self.outcomes[p.slug].pruned.append(f"{p.snapshot or '(listing)'} {p.result}")

    def _wave(self, members: list[model.Municipality]) -> None:
        self._wave_start = time.monotonic()
        self.room.reset()
        members = self._in_window(members)
        members = self._inspect(members)
        if self.opt.dry_run:
            for m in members:
                self._finish(m.slug, "planned")
            return
        members = [m for m in members if self._room_for_snapshot(m)]
        try:  # from the first change on: an interrupt (SIGTERM) reverts what has a snapshot
            active = self._parallel(members, self._prepare)
            active = self._deploy(active)
            active = self._parallel(active, self._reboot_if_needed)
            active = self._verify(active)
            self._parallel(active, self._complete)
        finally:
            # failed ones, and any left unfinished by an exception (KeyboardInterrupt, SIGTERM)
            self._undo([m for m in self._unfinished(members) if self.outcomes[m.slug].snapshot])
        for m in members:
            o = self.outcomes[m.slug]
            if o.result == "pending":  # no snapshot was taken: nothing to undo
                self._finish(m.slug, "failed", o.reason or "interrupted")

    def _room_for_snapshot(self, m: model.Municipality) -> bool:
        """Refuse (untouched) a VM whose pool has no room for its snapshot (patchroom)."""
        try:
            why = self.room.claim(m)
        except KallikratisError as exc:
            why = f"checking room for the snapshot: {exc.message}"
        if why:
            self.outcomes[m.slug].refused = True
            self._finish(m.slug, "failed", why)
        return not why

    def _unfinished(self, members: list[model.Municipality]) -> list[model.Municipality]:
        return [m for m in members if self.outcomes[m.slug].result == "pending"]

    def _parallel(
        self,
        members: list[model.Municipality],
        step: Callable[[model.Municipality], bool],
    ) -> list[model.Municipality]:
        """Run *step* on each member at once; the members for which it returned True."""
        if not members:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(members))) as pool:
            oks = list(pool.map(step, members))
        return [m for m, ok in zip(members, oks, strict=True) if ok]

    def _finish(self, slug: str, result: str, reason: str = "") -> None:
        o = self.outcomes[slug]
        o.result = result
        if reason and not o.reason:
            o.reason = reason
        o.seconds = time.monotonic() - self._wave_start if self._wave_start else 0.0
        self.progress(slug, result)
        self.record(o)

    def _fail(self, m: model.Municipality, reason: str) -> bool:
        o = self.outcomes[m.slug]
        if not o.reason:
            o.reason = reason
        log.warning("%s: %s", m.slug, reason)
        return False

    # -- steps -----------------------------------------------------------------------------
    def _in_window(self, members: list[model.Municipality]) -> list[model.Municipality]:
        if not self.opt.scheduled:
            return members
        now = self.now()
        inside = []
        for m in members:
            if schedule.in_window(m.patch_window, now):
                inside.append(m)
            else:
                self._finish(m.slug, "skipped", f"outside its patch window {m.patch_window!r}")
        return inside

    def _inspect(self, members: list[model.Municipality]) -> list[model.Municipality]:
        """Pending packages (and maintenance left on by an interrupted run), then stack changes."""

        def look(m: model.Municipality) -> bool:
            o = self.outcomes[m.slug]
            self.progress(m.slug, "checking updates")
            dom = self.backend(m.hypervisor).domain(m.vm_name)
            if dom is None or not dom.running:
                state = dom.state if dom else "not created"
                self._finish(m.slug, "failed", f"VM is {state}; nothing was changed")
                return False
            try:
                guest = self.steps.guest(m)
                o.upgrades = guest.pending(self.opt.security_only)
                o.was_in_maintenance = guest.in_maintenance()
            except KallikratisError as exc:
                self._finish(m.slug, "failed", f"checking updates: {exc.message}")
                return False
            return True

        members = self._parallel(members, look)
        quiet = [m for m in members if not self.outcomes[m.slug].needs_patch]
        if quiet:  # a check-mode deploy tells whether the stack would change anything
            for m in quiet:
                self.progress(m.slug, "checking stack")
            result = self.steps.deploy(quiet, True)
            for m in quiet:
                ok, changed, why = result.get(m.slug, (False, 0, "no result"))
                if not ok:
                    self._finish(m.slug, "failed", f"stack check: {why}")
                self.outcomes[m.slug].stack_changes = changed
        out = []
        for m in members:
            o = self.outcomes[m.slug]
            if o.result != "pending":
                continue
            if o.needs_patch:
                out.append(m)
            else:
                self._finish(m.slug, "unchanged", "")
        return out

    def _prepare(self, m: model.Municipality) -> bool:
        """Maintenance on, snapshot, OS upgrades."""
        o = self.outcomes[m.slug]
        guest = self.steps.guest(m)
        be = self.backend(m.hypervisor)
        try:
            self.progress(m.slug, "maintenance on")
            guest.maintenance(True)
            self.progress(m.slug, "snapshot")
            t = time.monotonic()
            name = snapshot_name(self.opt.run_id)
            try:
                be.create_snapshot(
                    m.vm_name, name, f"kallikratis patch run {self.opt.run_id}: before patching"
                )
            except KallikratisError:  # the connection dropped: it may exist all the same
                if name not in {s.name for s in be.list_snapshots(m.vm_name)}:
                    raise
            o.snapshot = name
            o.timings["snapshot"] = time.monotonic() - t
        except KallikratisError as exc:
            if not o.snapshot:  # nothing changed but the flag: take it away again
                try:
                    guest.maintenance(False)
                except KallikratisError as again:
                    log.warning("%s: leaving maintenance mode: %s", m.slug, again.message)
            return self._fail(m, f"before patching: {exc.message}")
        if not o.upgrades:
            return True
        try:
            self.progress(m.slug, "upgrading packages")
            t = time.monotonic()
            guest.apply(o.upgrades, self.opt.security_only)
            o.timings["upgrade"] = time.monotonic() - t
            now = guest.installed([u.package for u in o.upgrades])
        except KallikratisError as exc:
            return self._fail(m, f"upgrading packages: {exc.message}")
        missed = [str(u) for u in o.upgrades if now.get(u.package) != u.new]
        if missed:
            return self._fail(m, f"not upgraded as planned: {', '.join(missed)}")
        return True

    def _deploy(self, members: list[model.Municipality]) -> list[model.Municipality]:
        if not members:
            return []
        for m in members:
            self.progress(m.slug, "deploying")
        t = time.monotonic()
        result = self.steps.deploy(members, False)
        out = []
        for m in members:
            ok, changed, why = result.get(m.slug, (False, 0, "no result"))
            self.outcomes[m.slug].timings["deploy"] = time.monotonic() - t
            if ok:
                self.outcomes[m.slug].stack_changes = changed
                out.append(m)
            else:
                self._fail(m, f"deploy: {why}")
        return out

    def _reboot_if_needed(self, m: model.Municipality) -> bool:
        guest = self.steps.guest(m)
        try:
            if not guest.reboot_required():
                return True
            self.progress(m.slug, "rebooting")
            self.outcomes[m.slug].timings["reboot"] = guest.reboot()
            self.outcomes[m.slug].rebooted = True
            return True
        except KallikratisError as exc:
            return self._fail(m, f"reboot: {exc.message}")

    def _verify(self, members: list[model.Municipality]) -> list[model.Municipality]:
        if not members:
            return []
        for m in members:
            self.progress(m.slug, "verifying")
        result = dict(self.steps.verify(members, True))
        again = [m for m in members if not result.get(m.slug, (False, ""))[0]]
        again = [m for m in again if self.outcomes[m.slug].rebooted]
        if again:
            for m in again:
                self.progress(m.slug, "verifying again (services settling after the reboot)")
            time.sleep(self.opt.settle_seconds)
            result.update(self.steps.verify(again, True))
        out = []
        for m in members:
            ok, why = result.get(m.slug, (False, "no result"))
            if ok:
                out.append(m)
            else:
                self._fail(m, f"verify: {why}")
        return out

    def _complete(self, m: model.Municipality) -> bool:
        """Maintenance off, old snapshots pruned: patched."""
        o = self.outcomes[m.slug]
        try:
            self.steps.guest(m).maintenance(False)
        except KallikratisError as exc:
            return self._fail(m, f"leaving maintenance mode: {exc.message}")
        try:
            be = self.backend(m.hypervisor)
            be.prune_snapshots(m.vm_name, max(1, m.patch_keep_snapshots))
        except KallikratisError as exc:  # patched all the same; the next run prunes again
            o.reason = f"pruning snapshots: {exc.message}"
        self._finish(m.slug, "patched")
        return True

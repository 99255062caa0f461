"""The way back of a patch run: revert to the snapshot, confirm, or say exactly where a VM is.

Part of :class:`~kallikratis.patch.PatchRun` (a mixin, so the run's module stays readable).

After a successful revert the guest's clock is set, maintenance mode goes off, the snapshot is
deleted and a verify outside maintenance mode confirms the municipality serves again.

When the revert itself fails (libvirt refused, the snapshot is gone, the hypervisor stayed
away beyond the reconnect bound), the VM runs whatever the patch left. It is checked with the
maintenance-mode verify: if it serves, maintenance mode goes off (citizens get their service
back rather than a notice with no end); if not, the notice stays. Either way the outcome is
"failed" and its reason says what state the VM is in: the domain state, that it was NOT
reverted, the snapshot kept for a manual revert, the maintenance flag and the services.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kallikratis import model
from kallikratis.errors import KallikratisError

if TYPE_CHECKING:
    from kallikratis.hypervisor import BackendFactory
    from kallikratis.patch import Outcome, Progress, Steps

log = logging.getLogger(__name__)


class Reverts:
    backend: BackendFactory
    steps: Steps
    outcomes: dict[str, Outcome]
    progress: Progress
    _finish: Callable[..., None]

    def _undo(self, pending: list[model.Municipality]) -> None:
        """Revert each of *pending* (they have a snapshot), then confirm or describe them."""
        self._parallel(pending, self._revert)  # type: ignore[attr-defined]
        self._confirm([m for m in pending if self.outcomes[m.slug].reverted])
        self._describe([m for m in pending if not self.outcomes[m.slug].reverted])

    def _revert(self, m: model.Municipality) -> bool:
        o = self.outcomes[m.slug]
        self.progress(m.slug, "reverting")
        be = self.backend(m.hypervisor)
        t = time.monotonic()
        try:
            be.revert_snapshot(m.vm_name, o.snapshot)
        except KallikratisError as exc:
            o.reason = f"{o.reason or 'interrupted'}; REVERT FAILED ({exc.message})"
            return False
        o.timings["revert"] = time.monotonic() - t
        o.reverted = True
        guest = self.steps.guest(m)
        try:
            synced = be.sync_guest_clock(m.vm_name)
        except KallikratisError as exc:
            log.warning("%s: guest agent clock: %s", m.slug, exc.message)
            synced = False
        if not synced:
            try:
                guest.set_clock(time.time())
            except KallikratisError as exc:
                log.warning("%s: setting the clock after revert: %s", m.slug, exc.message)
        try:
            guest.maintenance(False)
            be.delete_snapshot(m.vm_name, o.snapshot)
        except KallikratisError as exc:
            o.reason = f"{o.reason}; after revert: {exc.message}"
        return True

    def _confirm(self, members: list[model.Municipality]) -> None:
        """After a revert: does the municipality serve again? Either way it failed."""
        if not members:
            return
        for m in members:
            self.progress(m.slug, "confirming revert")
        result = self.steps.verify(members, False)
        for m in members:
            ok, why = result.get(m.slug, (False, "no result"))
            o = self.outcomes[m.slug]
            o.reason = f"{o.reason or 'interrupted'}; reverted to the snapshot, " + (
                "serving again" if ok else f"but NOT serving: {why}"
            )
            self._finish(m.slug, "failed")

    def _describe(self, members: list[model.Municipality]) -> None:
        """The revert failed: out of maintenance if it serves; the state said in the reason."""
        if not members:
            return
        for m in members:
            self.progress(m.slug, "checking the VM after the failed revert")
        try:
            serving = self.steps.verify(members, True)  # the flag is still on
        except KallikratisError as exc:
            serving = {m.slug: (False, f"verify: {exc.message}") for m in members}
        for m in members:
            ok, why = serving.get(m.slug, (False, "no result"))
            o = self.outcomes[m.slug]
            flag = self._flag_after(m, ok)
            services = "services answering" if ok else f"services NOT answering ({why})"
            o.reason += (
                f"; the VM is {self._domain_state(m)} and NOT reverted (it runs what the patch "
                f"left); snapshot {o.snapshot} kept for a manual revert (virsh snapshot-revert "
                f"{m.vm_name} {o.snapshot} --running); maintenance mode {flag}; {services}"
            )
            self._finish(m.slug, "failed")

    def _flag_after(self, m: model.Municipality, serving: bool) -> str:
        guest = self.steps.guest(m)
        try:
            if serving:
                guest.maintenance(False)
                return "off (it serves)"
            return "ON (citizens see the notice)" if guest.in_maintenance() else "off"
        except KallikratisError as exc:
            return f"unknown ({exc.message})"

    def _domain_state(self, m: model.Municipality) -> str:
        try:
            dom = self.backend(m.hypervisor).domain(m.vm_name)
        except KallikratisError as exc:
            return f"in an unknown state ({exc.message})"
        return dom.state if dom else "not defined"

"""`kallikratis restore NAME --to-new NEWNAME`: NAME's archive into a fresh VM.

NEWNAME is a municipality declared in the inventory whose VM does not exist yet: it is brought
up and deployed as `onboard` does, then NAME's archive is restored into it by the same relay
and dump loading as a restore test (:mod:`kallikratis.restoreinto`), WordPress' addresses
set to NEWNAME's domain, the content checked against the archive, NEWNAME's own portal set-up
applied again over the archive's database (its site title, administrator, pages: the archive
holds NAME's), and verify run. Kolibri's facility, its learners and its administrator come
with the archive unchanged: they are the content being moved.

Refused (exit 2, nothing changed): NEWNAME = NAME, a central VM, NEWNAME without one of NAME's
modules (its data would be dropped), and a NEWNAME whose VM exists, in any state: a restore
replaces its databases and uploads, and whether an existing VM holds nothing of value cannot
be told from outside. A failed or interrupted run leaves NEWNAME's VM; `destroy NEWNAME`,
then run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kallikratis import model
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.restore import RestoreOutcome, VerifyFn
from kallikratis.restoreinto import Transplant, actual_script, check_content, parse_actual


def check_target(source: model.Municipality, target: model.Municipality, exists: bool) -> None:
    """The refusals, before anything changes."""
    if target.slug == source.slug:
        raise UsageError("--to-new names the municipality itself: `restore NAME` restores in place")
    if target.is_central:
        raise UsageError(f"{target.slug} is a central VM, not a municipality")
    missing = [mod for mod in source.modules if mod not in target.modules]
    if missing:
        raise UsageError(
            f"{target.slug} lacks module(s) {', '.join(missing)} of {source.slug}: their data "
            "would not be restored (add them to its inventory entry)"
        )
    if exists:
        raise UsageError(
            f"{target.slug} already has a VM ({target.vm_name}): --to-new restores into a fresh "
            f"one only. `kallikratis destroy {target.slug}` first if it holds nothing to keep"
        )


def to_new(
    target: model.Municipality,
    transplant: Transplant,
    verify: VerifyFn,
    reapply: Callable[[], None],
    progress: Callable[[str], None] = lambda _phase: None,
) -> RestoreOutcome:
    """Restore into *target*'s VM (up and deployed by the caller), check the content,
    *reapply* the target's own settings over the archive's (raises KallikratisError), verify.
    The content is checked before: the set-up adds its sample posts where they are missing."""
    o = RestoreOutcome(target.slug, transplant.archive)
    start = time.monotonic()
    phase = "restoring files and databases"
    try:
        progress(phase)
        t = time.monotonic()
        expected = transplant.run(target, moved=True)
        o.timings[phase] = time.monotonic() - t
        phase = "content check"
        progress(phase)
        check_content(expected, parse_actual(transplant.target.run(actual_script(target), 600)))
        phase = "applying its own settings"
        progress(phase)
        t = time.monotonic()
        reapply()
        o.timings[phase] = time.monotonic() - t
        phase = "verifying"
        progress(phase)
        t = time.monotonic()
        ok, why = verify([target]).get(target.slug, (False, "no result"))
        o.timings[phase] = time.monotonic() - t
        if not ok:
            raise KallikratisError(f"verify: {why}")
        o.result = "restored"
    except KallikratisError as exc:
        o.detail = f"{phase}: {exc.message}"
    o.seconds = time.monotonic() - start
    return o

"""Restore a municipality from one of its archives, behind a snapshot.

Maintenance mode on (citizens see the notice), a libvirt snapshot of the VM (the patch run's
snapshots, :mod:`kallikratis.hypervisor.snapshots`), then on the VM: Kolibri stopped, the
files extracted over the live ones (``borgmatic extract``), the databases restored
(``borgmatic restore``: WordPress' MariaDB dump, Kolibri's SQLite dump), Kolibri started;
then the verify suites, and maintenance mode off. Any failure reverts the VM to the snapshot
(and says so); a revert that fails leaves the snapshot for a manual one and says that too.

Only the municipality's own archives are restored: an archive named for another
municipality is refused before anything changes (and the VM's key reaches no other
repository: roles/backupstore).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kallikratis import model
from kallikratis.backups import Archive, owns
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.guest import Guest
from kallikratis.hypervisor import LibvirtBackend
from kallikratis.hypervisor.snapshots import PREFIX

log = logging.getLogger(__name__)
RESTORE_TIMEOUT = 3 * 3600.0
#: what roles/backup puts into an archive, as borg names the paths (no leading /)
ETC_PATH = "etc/kallikratis"
UPLOADS_PATH = "var/lib/wordpress/wp-content/uploads"
KOLIBRI_HOME = "/var/lib/kolibri"
KOLIBRI_USER = "kolibri"

#: (municipalities, maintenance expected) -> {slug: (ok, why)}, as a patch run's verify step
VerifyFn = Callable[[list[model.Municipality]], dict[str, tuple[bool, str]]]


class RestoreError(KallikratisError):
    """The restore failed (the VM was reverted to its snapshot, or the report says why not)."""

    exit_code = 5


@dataclass
class RestoreOutcome:
    slug: str
    archive: str
    result: str = "failed"
    snapshot: str = ""
    reverted: bool = False
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    detail: str = ""


def check_owner(slug: str, archive: str) -> None:
    """Refuse (exit 2, nothing changed) an archive that is not named as *slug*'s."""
    if not owns(slug, archive):
        raise UsageError(
            f"archive {archive!r} is not an archive of {slug} (its archives are named "
            f"{slug}-<date>): refusing to restore another municipality's data"
        )


def choose(slug: str, archives: list[Archive], wanted: str | None) -> Archive:
    """The archive to restore: *wanted* (a name) or the newest; refused when it is not
    *slug*'s own (exit 2, nothing changed)."""
    if wanted is not None:
        check_owner(slug, wanted)
    if not archives:
        raise UsageError(f"{slug} has no archive yet (`kallikratis backup {slug}` makes one)")
    if wanted is None:
        return archives[-1]
    for archive in archives:
        if archive.name == wanted:
            return archive
    raise UsageError(f"{slug} has no archive {wanted!r} (`kallikratis backups {slug}` lists them)")


def restore_paths(m: model.Municipality) -> list[str]:
    """The file trees of *m*'s archive, per its modules (roles/backup's source_directories)."""
    paths = [ETC_PATH]
    if "portal" in m.modules:
        paths.append(UPLOADS_PATH)
    if "education" in m.modules:
        paths.append(KOLIBRI_HOME.lstrip("/"))
    return paths


def restore_script(m: model.Municipality, archive: str) -> str:
    """On the VM: files, then databases, from *archive*; Kolibri stopped meanwhile."""
    name = shlex.quote(archive)
    education = "education" in m.modules
    paths = " ".join(f"--path {shlex.quote(p)}" for p in restore_paths(m))  # one flag each
    lines = []
    if education:
        lines.append("systemctl stop kolibri.service")
    lines.append(f"borgmatic extract --archive {name} --destination / {paths}")
    if education:  # the SQLite dump replaces the database: no stale write-ahead log with it
        lines.append(f"rm -f {KOLIBRI_HOME}/db.sqlite3-wal {KOLIBRI_HOME}/db.sqlite3-shm")
    if "portal" in m.modules or education:
        lines.append(f"borgmatic restore --archive {name}")
    if education:
        lines.append(f"chown -R {KOLIBRI_USER}:{KOLIBRI_USER} {KOLIBRI_HOME}")
        lines.append("systemctl start kolibri.service")
    return "\n".join(lines) + "\n"


def snapshot_name(run_id: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{PREFIX}{stamp}-r{run_id}-restore"


class Restore:
    """One municipality's restore (the backend: libvirt's snapshot methods)."""

    def __init__(
        self,
        m: model.Municipality,
        backend: LibvirtBackend,
        guest: Guest,
        verify: VerifyFn,
        run_id: int,
        progress: Callable[[str], None] = lambda _phase: None,
    ) -> None:
        self.m = m
        self.be = backend
        self.guest = guest
        self.verify = verify
        self.run_id = run_id
        self.progress = progress
        self.archive = ""

    def run(self, archive: Archive) -> RestoreOutcome:
        self.archive = archive.name
        o = RestoreOutcome(self.m.slug, archive.name)
        start = time.monotonic()
        try:
            self._prepare(o)
        except KallikratisError as exc:
            o.detail = f"before restoring (nothing restored): {exc.message}"
            self._leave_maintenance(o)
            o.seconds = time.monotonic() - start
            return o
        try:
            self._step(o, "restoring files and databases", self._restore)
            self._step(o, "verifying", self._verify)
            self._step(o, "maintenance off", lambda: self.guest.maintenance(False))
            o.result = "restored"
        except KallikratisError as exc:
            o.detail = exc.message
            self._revert(o)
        o.seconds = time.monotonic() - start
        return o

    def _step(self, o: RestoreOutcome, phase: str, action: Callable[[], None]) -> None:
        self.progress(phase)
        t = time.monotonic()
        action()
        o.timings[phase] = time.monotonic() - t

    def _prepare(self, o: RestoreOutcome) -> None:
        self.progress("maintenance on")
        self.guest.maintenance(True)
        self.progress("snapshot")
        name = snapshot_name(self.run_id)
        self.be.create_snapshot(
            self.m.vm_name, name, f"kallikratis restore run {self.run_id}: before restoring"
        )
        o.snapshot = name

    def _restore(self) -> None:
        self.guest.run(restore_script(self.m, self.archive), RESTORE_TIMEOUT)

    def _verify(self) -> None:
        ok, why = self.verify([self.m]).get(self.m.slug, (False, "no result"))
        if not ok:
            raise KallikratisError(f"verify: {why}")

    def _leave_maintenance(self, o: RestoreOutcome) -> None:
        try:
            self.guest.maintenance(False)
        except KallikratisError as exc:
            o.detail += f"; maintenance mode may still be on: {exc.message}"

    def _revert(self, o: RestoreOutcome) -> None:
        self.progress("reverting to the snapshot")
        try:
            self.be.revert_snapshot(self.m.vm_name, o.snapshot)
        except KallikratisError as exc:
            o.detail += (
                f"; REVERT FAILED ({exc.message}): snapshot {o.snapshot} kept for a manual "
                f"revert (virsh snapshot-revert {self.m.vm_name} {o.snapshot} --running)"
            )
            return
        o.reverted = True
        try:
            if not self.be.sync_guest_clock(self.m.vm_name):
                self.guest.set_clock(time.time())
        except KallikratisError as exc:
            log.warning("%s: setting the clock after revert: %s", self.m.slug, exc.message)
        self._leave_maintenance(o)
        o.detail += f"; reverted to snapshot {o.snapshot} (the VM is as before the restore)"


def restore(
    m: model.Municipality,
    archive: Archive,
    backend: LibvirtBackend,
    guest: Guest,
    verify: VerifyFn,
    run_id: int,
    progress: Callable[[str], None] = lambda _phase: None,
) -> RestoreOutcome:
    """Restore *m* from *archive* (chosen by :func:`choose`)."""
    return Restore(m, backend, guest, verify, run_id, progress).run(archive)

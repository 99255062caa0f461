"""Backups of the municipalities: borgmatic on each VM into its own repository on `control`.

A backup runs on the municipality's VM (``borgmatic create``, over the pinned SSH path as the
admin user, see :mod:`kallikratis.guest`): roles/backup configured borgmatic there, with the
repository ``ssh://borg@<control>/./<slug>``, repokey-blake2 and the municipality's passphrase
in a root-only file. control's authorized_keys forces ``borg serve --append-only`` for that
VM's key, so the VM cannot delete anything: pruning (``backup_keep``) and compaction run on
control against the local repository, started from the controller with the passphrase on the
SSH session's standard input (``BORG_PASSPHRASE_FD=0``). control never stores a passphrase,
and no passphrase is ever in an argv, a log or the journal.

Reading the archives (``kallikratis backups``) also runs on control: it works while the
municipality's VM is down or gone.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kallikratis import backupremote, backupstore, model
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.guest import Guest, GuestError
from kallikratis.stackvars import BACKUP_STORE_DIR, BACKUP_STORE_USER

log = logging.getLogger(__name__)
ENCRYPTION = "repokey-blake2"
#: the longest one municipality's `borgmatic create` may take (seconds)
CREATE_TIMEOUT = 3 * 3600.0
STORE_TIMEOUT = 1800.0
DEFAULT_PARALLEL = 4
#: seconds borg on control waits for a repository lock (a VM's backup may be writing)
LOCK_WAIT = "300"

GuestOf = Callable[[model.Municipality], Guest]
PassphraseOf = Callable[[str], str]


class BackupError(KallikratisError):
    """Some municipalities were not backed up (the others were), or only on control."""

    exit_code = 5


def verdict(outcomes: Sequence[Outcome]) -> str:
    """ "" when every backup is whole, else the message of the run's BackupError (exit 5):
    a municipality backed up on control only (``partial``) is not a whole backup either."""
    failed = [o.slug for o in outcomes if o.result == "failed"]
    partial = [o.slug for o in outcomes if o.result == "partial"]
    said = []
    if failed:
        said.append(f"backup failed on: {', '.join(failed)}")
    if partial:
        said.append(
            f"the off-site copy failed on: {', '.join(partial)} (control's archive was made)"
        )
    return "; ".join(said)


@dataclass(frozen=True)
class Archive:
    """One archive of a repository, as borg reports it (sizes in bytes)."""

    name: str
    start: str
    original_size: int = 0
    compressed_size: int = 0
    deduplicated_size: int = 0
    nfiles: int = 0
    seconds: float = 0.0


@dataclass
class Outcome:
    """One municipality's backup: ok, partial (control's archive made and pruned, the
    off-site copy failed) or failed, and what borg said about the archives."""

    slug: str
    result: str = "failed"
    archive: Archive | None = None
    seconds: float = 0.0
    pruned: list[str] = field(default_factory=list)
    detail: str = ""
    #: what was found and done on the way (a stale lock broken, ...), shown and journaled
    notes: list[str] = field(default_factory=list)
    #: the off-site copy: "" (no backup_remote), "ok" or "failed"
    remote: str = ""
    remote_archive: Archive | None = None
    remote_detail: str = ""


# -- parsing borg's and borgmatic's JSON ------------------------------------------------------
def _archive(data: Mapping[str, Any]) -> Archive:
    stats = data.get("stats") or {}
    try:
        return Archive(
            name=str(data["name"]),
            start=str(data.get("start", "")),
            original_size=int(stats.get("original_size", 0)),
            compressed_size=int(stats.get("compressed_size", 0)),
            deduplicated_size=int(stats.get("deduplicated_size", 0)),
            nfiles=int(stats.get("nfiles", 0)),
            seconds=float(data.get("duration", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KallikratisError(
            f"borg reported an archive without a usable name or stats: {exc}"
        ) from None


def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise KallikratisError(f"{what}: not JSON ({exc}): {text[:200]!r}") from None


def parse_create(text: str) -> Archive:
    """The archive `borgmatic create --json` made (one repository: a list of one result)."""
    data = _load(text, "borgmatic create --json")
    results = data if isinstance(data, list) else [data]
    made = [r["archive"] for r in results if isinstance(r, dict) and "archive" in r]
    if len(made) != 1:
        raise KallikratisError(f"borgmatic create --json: expected one archive, got {len(made)}")
    return _archive(made[0])


def parse_archives(text: str) -> list[Archive]:
    """The archives of `borg info --json` or `borg list --json`, oldest first."""
    data = _load(text, "borg --json")
    if not isinstance(data, dict) or not isinstance(data.get("archives"), list):
        raise KallikratisError("borg --json: no list of archives in the output")
    return sorted((_archive(a) for a in data["archives"]), key=lambda a: (a.start, a.name))


#: listing every archive of a big repository takes a while
REMOTE_ARCHIVES_TIMEOUT = 900.0


def remote_archives(guest: Guest) -> list[Archive]:
    """The archives of the off-site repository, read on the municipality's VM (only its key
    is authorized on the remote; the passphrase is the VM's own), oldest first."""
    out = guest.run(backupremote.archives_script(), REMOTE_ARCHIVES_TIMEOUT)
    return parse_archives(backupremote.info_of_one(out))


def owns(slug: str, archive: str) -> bool:
    """True when *archive* is named as *slug*'s borgmatic names it (roles/backup)."""
    return archive.startswith(f"{slug}-") and archive[len(slug) + 1 : len(slug) + 2].isdigit()


# -- the scripts ---------------------------------------------------------------------------------
def create_script(slug: str = "", remote: bool = False) -> str:
    """On the VM: per repository (control's, then the off-site one when *remote*), the
    repository made if it is missing (borgmatic skips an existing one), then one archive
    (:func:`kallikratis.backupremote.create_script`)."""
    return backupremote.create_script(slug, remote, encryption=ENCRYPTION)


def repository_path(slug: str) -> str:
    return f"{BACKUP_STORE_DIR}/{slug}"


def store_script(
    commands: Sequence[Sequence[str]],
    *,
    keyed: Sequence[bool],
    user: str = BACKUP_STORE_USER,
    home: str = BACKUP_STORE_DIR,
    data: bool = False,
) -> str:
    """On control, as the backup user: borg *commands* on the local repositories.

    The passphrase is the first line of standard input; each command that needs the key
    (*keyed*) gets it on its own standard input (``BORG_PASSPHRASE_FD=0``) from the shell's
    printf builtin: never in an argv or a file. *data*: stdout is the commands' data (a tar
    stream, JSON lines), borg's messages stay on stderr.
    """
    lines = ['IFS= read -r kk_passphrase || [ -n "$kk_passphrase" ]']
    for argv, needs_key in zip(commands, keyed, strict=True):
        # borg logs (prune --list) on stderr: onto stdout, except where stdout is JSON
        merge = "" if data or "--json" in argv else " 2>&1"
        borg = (
            f"runuser -u {shlex.quote(user)} -- env HOME={shlex.quote(home)} BORG_PASSPHRASE_FD=0 "
            f"borg {shlex.join(argv)}{merge}"
        )
        if needs_key:
            lines.append(f"printf '%s\\n' \"$kk_passphrase\" | {borg}")
        else:
            lines.append(f"{borg} </dev/null")
    return "\n".join(lines) + "\n"


def prune_commands(slug: str, keep: Mapping[str, int]) -> tuple[list[list[str]], list[bool]]:
    """Prune per *keep* ({daily, weekly, monthly}) then compact (frees the space)."""
    repo = repository_path(slug)
    keeps = [f"--keep-{k}={int(keep[k])}" for k in sorted(keep)]
    prune = ["--lock-wait", LOCK_WAIT, "prune", "--list", *keeps, repo]
    return [prune, ["--lock-wait", LOCK_WAIT, "compact", repo]], [True, False]


def parse_pruned(text: str) -> list[str]:
    """The archives `borg prune --list` says it pruned."""
    out = []
    for line in text.splitlines():
        if line.startswith("Pruning archive"):
            words = line.split(":", 1)[1].split()
            if words:
                out.append(words[0])
    return out


# -- running -------------------------------------------------------------------------------------
def require_control(fleet: model.Fleet) -> model.Municipality:
    control = fleet.control
    if control is None:
        raise UsageError(
            "backups need the backup store on a central VM with role control "
            "(inventory group `central`), and this fleet has none"
        )
    return control


def tenants_only(selection: Iterable[model.Municipality]) -> list[model.Municipality]:
    chosen = list(selection)
    central = [m.slug for m in chosen if m.is_central]
    if central:
        raise UsageError(
            f"{', '.join(central)}: the center's own VMs are not backed up "
            "(they are rebuilt from the inventory); name municipalities"
        )
    return chosen


class Store:
    """The backup store on control: the borg commands that need a passphrase run there."""

    def __init__(self, guest: Guest, passphrase_of: PassphraseOf) -> None:
        self.guest = guest
        self.passphrase_of = passphrase_of

    def run(self, slug: str, commands: Sequence[Sequence[str]], keyed: Sequence[bool]) -> str:
        stdin = self.passphrase_of(slug) + "\n"
        return self.guest.run(store_script(commands, keyed=keyed), STORE_TIMEOUT, stdin=stdin)

    def archives(self, slug: str) -> list[Archive]:
        """Every archive of *slug*'s repository with its sizes (`borg info --last`)."""
        repo = repository_path(slug)
        if self.guest.run(f"test -d {shlex.quote(repo)} && echo yes || echo no").strip() != "yes":
            return []
        info = ["--lock-wait", LOCK_WAIT, "info", "--json", "--last", "100000", repo]
        out = self.run(slug, [info], [True])
        return parse_archives(out)

    def prune(self, slug: str, keep: Mapping[str, int]) -> tuple[list[str], bool]:
        """Prune and compact after a good archive; the municipality's destroy record (if
        any) is cleared in the same session. (pruned archives, whether a record was cleared)"""
        commands, keyed = prune_commands(slug, keep)
        stdin = self.passphrase_of(slug) + "\n"
        script = store_script(commands, keyed=keyed) + backupstore.alive_line(slug)
        out = self.guest.run(script, STORE_TIMEOUT, stdin=stdin)
        return parse_pruned(out), backupstore.undestroyed(out, slug)

    def check(self, slug: str) -> backupstore.CheckResult:
        """Check *slug*'s repository and its archives' metadata now (recorded on control)."""
        return backupstore.check(self.guest, slug, self.passphrase_of(slug))

    def status(self, slug: str) -> backupstore.StoreStatus:
        """The last check's result and the destroy record of *slug*'s repository."""
        return backupstore.status(self.guest, slug)

    def prepare(self, slug: str) -> backupstore.Prepared:
        """Break a stale lock of *slug*'s repository; only while holding its run lock."""
        return backupstore.prepare(self.guest, slug)


#: what borg says when control's backup volume is full (ENOSPC, or its own free-space check)
_FULL = ("No space left on device", "Insufficient free space", "[Errno 28]")
_LOCKED = ("Failed to create/acquire the lock", "LockTimeout")


def explain(message: str) -> str:
    """A failed `borgmatic create`, said in the sysadmin's terms where borg's words are known."""
    if any(s in message for s in _FULL):
        return (
            "control's backup volume is full: no archive was made and the earlier ones are "
            f"intact. Free space in {BACKUP_STORE_DIR} on control (a larger volume, fewer "
            "archives kept), then back up again. borg said: " + message[-300:]
        )
    if any(s in message for s in _LOCKED):
        return (
            "the repository is locked by another borg process on control (a check or a "
            "backup still running): try again later. borg said: " + message[-300:]
        )
    return message


def _remote_leg(o: Outcome, leg: backupremote.Leg | None) -> None:
    o.remote = "failed"
    if leg is None:
        o.remote_detail = "the VM did not report the off-site copy"
    elif not leg.ok:
        o.remote_detail = backupremote.explain(leg.error)
    else:
        try:
            o.remote_archive = parse_create(leg.json)
            o.remote = "ok"
        except KallikratisError as exc:
            o.remote_detail = exc.message


def backup_one(m: model.Municipality, guest: Guest, store: Store) -> Outcome:
    """Create one archive per repository on *m*'s VM, then prune control's repository."""
    o = Outcome(m.slug)
    start = time.monotonic()
    try:
        o.notes += store.prepare(m.slug).notes()
    except KallikratisError as exc:  # the backup may still work: borg says if it does not
        o.notes.append(f"the repository's lock was not checked on control: {exc.message}")
    remote = m.backup_remote is not None
    try:
        legs = backupremote.parse_legs(guest.run(create_script(m.slug, remote), CREATE_TIMEOUT))
        if remote:
            _remote_leg(o, legs.get(backupremote.REMOTE_LABEL))
        control = legs.get(backupremote.CONTROL_LABEL)
        if control is None or not control.ok:
            raise KallikratisError(control.error if control else "no result for control")
        o.archive = parse_create(control.json)
    except KallikratisError as exc:
        o.detail = f"backup: {explain(exc.message)}"
        o.seconds = time.monotonic() - start
        return o
    try:
        o.pruned, undestroyed = store.prune(m.slug, m.backup_keep)
        if undestroyed:
            o.notes.append(backupstore.UNDESTROYED_NOTE)
        o.result = "ok" if o.remote in ("", "ok") else "partial"
        if o.result == "partial":
            o.detail = f"remote failed: {o.remote_detail}"
    except KallikratisError as exc:
        o.detail = f"archive {o.archive.name} made, but pruning on control failed: {exc.message}"
    o.seconds = time.monotonic() - start
    return o


def run(
    selection: Sequence[model.Municipality],
    guest_of: GuestOf,
    store: Store,
    *,
    parallel: int = DEFAULT_PARALLEL,
    done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Back up *selection*, *parallel* at a time; one unreachable VM fails alone."""

    def one(m: model.Municipality) -> Outcome:
        try:
            outcome = backup_one(m, guest_of(m), store)
        except GuestError as exc:  # defensive: backup_one catches what the guest raises
            outcome = Outcome(m.slug, detail=exc.message)
        if done is not None:
            done(outcome)
        return outcome

    if not selection:
        return []
    with ThreadPoolExecutor(max(1, min(parallel, len(selection)))) as pool:
        return list(pool.map(one, selection))

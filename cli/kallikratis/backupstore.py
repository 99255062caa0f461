"""The backup store's own tool on `control`: checks, stale locks, destroyed municipalities.

roles/backupstore installs ``kallikratis-backupstore`` (a Python script, standard library
only; ``roles/backupstore/files/usr/local/sbin``) and two systemd timers that run it: a weekly
``check --all`` (``borg check --repository-only``, no key needed) and a daily ``expire``
(repositories of municipalities destroyed more than ``backup_retention_after_destroy`` days
ago). The controller runs the same tool over SSH: ``check --with-key`` for ``kallikratis
backups NAME --check`` (the passphrase on standard input: the archives' metadata too),
``status`` for ``kallikratis backups``, ``prepare`` before each backup and restore (break a
stale repository lock), ``destroyed`` after ``destroy`` and ``alive`` after a good backup or
restore (the destroy record cleared: the municipality was onboarded again).

This module builds those command lines and reads the tool's JSON; it never prints.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest
from kallikratis.stackvars import BACKUP_STORE_DIR, BACKUP_STORE_USER

TOOL = "/usr/local/sbin/kallikratis-backupstore"
STATE_DIR = "/var/lib/kallikratis-backupstore"
#: a full check reads every archive's metadata: allow it hours
CHECK_TIMEOUT = 6 * 3600.0
#: the tool's exit code when a check ran and failed (its JSON says why)
CHECK_FAILED = 1
MISSING = "kallikratis-backupstore is not on control yet: `kallikratis deploy control`"


@dataclass(frozen=True)
class CheckResult:
    """One check of a repository: when it ended (epoch seconds), whether it passed."""

    time: int
    passed: bool
    scope: str  # "repository" (weekly, no key) or "repository+archives"
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class StoreStatus:
    """What control knows about one municipality's repository."""

    repository: bool
    check: CheckResult | None
    destroyed: int | None  # epoch seconds of the destroy, None while it lives


@dataclass(frozen=True)
class Prepared:
    """A repository made ready for a backup: what was found and done."""

    lock: str  # "none", "held" (a live borg process), "broken" (was stale), "stale" (not broken)
    holders: tuple[str, ...] = ()
    detail: str = ""

    def notes(self) -> list[str]:
        out = []
        who = ", ".join(self.holders) or "no holder recorded"
        if self.lock == "broken":
            out.append(f"a stale lock in the repository ({who}, no such borg process) was broken")
        elif self.lock == "stale":
            out.append(f"a stale lock in the repository ({who}) could not be broken: {self.detail}")
        elif self.lock == "held":
            out.append(f"the repository is locked by a running borg process on control ({who})")
        return out


def command(*args: str, stdin_key: bool = False, tolerate_failed_check: bool = False) -> str:
    """The shell line running the tool on control (as root, via :class:`Guest`)."""
    base = [TOOL, "--store", BACKUP_STORE_DIR, "--user", BACKUP_STORE_USER, *args]
    line = shlex.join(base)
    if tolerate_failed_check:
        line += f" || [ $? -eq {CHECK_FAILED} ]"
    present = f"test -x {TOOL} || {{ echo {shlex.quote(MISSING)} >&2; exit 3; }}"
    return f"{present}\n{line}\n"


def parse(text: str) -> list[dict[str, Any]]:
    """The tool's output: one JSON object per line."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise KallikratisError(f"kallikratis-backupstore: not JSON: {line[:200]!r}") from None
        if not isinstance(data, dict):
            raise KallikratisError(f"kallikratis-backupstore: not an object: {line[:200]!r}")
        out.append(data)
    return out


def _one(text: str, slug: str) -> dict[str, Any]:
    found = [d for d in parse(text) if d.get("slug") == slug]
    if len(found) != 1:
        raise KallikratisError(f"kallikratis-backupstore: no result for {slug}")
    return found[0]


def check_result(data: Any) -> CheckResult | None:
    if not isinstance(data, dict):
        return None
    try:
        return CheckResult(
            time=int(data["time"]),
            passed=data["passed"] is True,
            scope=str(data.get("scope", "")),
            seconds=float(data.get("seconds", 0.0)),
            detail=str(data.get("detail", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def check(guest: Guest, slug: str, passphrase: str) -> CheckResult:
    """``borg check`` (repository and archives' metadata) of *slug*'s repository, now."""
    script = command("check", "--with-key", slug, tolerate_failed_check=True)
    out = guest.run(script, CHECK_TIMEOUT, stdin=passphrase + "\n")
    result = check_result(_one(out, slug))
    if result is None:
        raise KallikratisError(f"kallikratis-backupstore: an unusable check result for {slug}")
    return result


def status(guest: Guest, slug: str) -> StoreStatus:
    data = _one(guest.run(command("status", slug)), slug)
    destroyed = data.get("destroyed")
    return StoreStatus(
        repository=data.get("repository") is True,
        check=check_result(data.get("check")),
        destroyed=int(destroyed) if isinstance(destroyed, int | float) else None,
    )


def prepare(guest: Guest, slug: str) -> Prepared:
    """Before a backup of *slug*; the caller holds its run lock (:mod:`kallikratis.runlock`)."""
    data = _one(guest.run(command("prepare", slug)), slug)
    return Prepared(
        lock=str(data.get("lock", "none")),
        holders=tuple(str(h) for h in data.get("holders") or ()),
        detail=str(data.get("detail", "")),
    )


UNDESTROYED_NOTE = "its destroy record on control was cleared (the municipality lives again)"


def alive_line(slug: str) -> str:
    """A shell line clearing *slug*'s destroy record, skipped on a control without the tool."""
    return f"if [ -x {TOOL} ]; then {shlex.join([TOOL, 'alive', slug])}; fi\n"


def undestroyed(text: str, slug: str) -> bool:
    """Whether *text* (any output with the tool's lines in it) says a record was cleared."""
    for line in text.splitlines():
        if line.startswith("{") and '"undestroyed"' in line:
            data = parse(line)[0]
            if data.get("slug") == slug and data.get("undestroyed") is True:
                return True
    return False


def alive(guest: Guest, slug: str) -> bool:
    return undestroyed(guest.run(alive_line(slug)), slug)


def destroyed(guest: Guest, slugs: list[str]) -> dict[str, int]:
    """Record on control that *slugs*' VMs are gone; slug -> the recorded destroy time."""
    script = "".join(command("destroyed", s) for s in slugs)
    return {
        str(d["slug"]): int(d["destroyed"])
        for d in parse(guest.run(script))
        if isinstance(d.get("destroyed"), int)
    }

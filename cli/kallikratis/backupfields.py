"""Inventory fields of the backups: retention (``backup_keep``), the off-site copy
(``backup_remote``) and how long a destroyed municipality's repository is kept
(``backup_retention_after_destroy``, fleet-wide).

Pure parsing like :mod:`kallikratis.opsfields`: each function takes the raw value and returns
the model value plus a list of (field, message) problems; :mod:`kallikratis.inventory` adds
file and entry. Both are set for the fleet in group_vars and may be overridden per
municipality (a municipality's ``backup_keep`` replaces the fleet's mapping as a whole, as
Ansible's variable precedence does; a key it leaves out takes the default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Problems = list[tuple[str, str]]

KEEP_KEYS = ("daily", "weekly", "monthly")
DEFAULT_KEEP: Mapping[str, int] = {"daily": 7, "weekly": 4, "monthly": 6}
#: ssh://[user@]host[:port]/path: a DNS name, an IPv4 address or a bracketed IPv6 address;
#: the path absolute or relative to the login's home ("/./backups")
REMOTE_RE = re.compile(
    r"ssh://(?:(?P<user>[a-z_][a-z0-9_-]{0,31})@)?"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._/~+-]*)"
)


#: control's backup-store volume (GiB); qcow2 is sparse: only what is written takes space
DEFAULT_VOLUME_GIB = 50


def backup_volume_gib(value: Any) -> tuple[int, Problems]:
    """GiB of control's own volume for the repositories (``backup_volume_gib``)."""
    if value is None:
        return DEFAULT_VOLUME_GIB, []
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
        why = f"must be a whole number of GiB between 1 and 65536, got {value!r}"
        return DEFAULT_VOLUME_GIB, [("backup_volume_gib", why)]
    return value, []


def backup_keep(value: Any) -> tuple[dict[str, int], Problems]:
    """Archives kept per period after each backup's prune: {daily, weekly, monthly}."""
    if value is None:
        return dict(DEFAULT_KEEP), []
    if not isinstance(value, dict) or not value:
        why = f"must be a mapping of {', '.join(KEEP_KEYS)} to positive integers, got {value!r}"
        return dict(DEFAULT_KEEP), [("backup_keep", why)]
    problems: Problems = []
    unknown = sorted(str(k) for k in value if k not in KEEP_KEYS)
    if unknown:
        problems.append(("backup_keep", f"unknown keys {unknown} (known: {list(KEEP_KEYS)})"))
    out = dict(DEFAULT_KEEP)
    for key in KEEP_KEYS:
        if key not in value:
            continue
        n = value[key]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10000:
            problems.append((f"backup_keep.{key}", f"must be a positive integer, got {n!r}"))
        else:
            out[key] = n
    if problems:
        return dict(DEFAULT_KEEP), problems
    return out, []


def backup_remote(value: Any) -> tuple[str, Problems]:
    """The off-site second copy's repository base, ``ssh://user@host[:port]/path`` ("" = none).

    Validated only: the copy itself is not implemented yet (README, "Backups and restore").
    """
    if value is None or value == "":
        return "", []
    match = REMOTE_RE.fullmatch(value) if isinstance(value, str) else None
    why = f"must be an ssh:// URL like ssh://borg@offsite.example.org/./kallikratis, got {value!r}"
    if match is None:
        return "", [("backup_remote", why)]
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return "", [("backup_remote", f"port must be 1-65535, got {port}")]
    if "/../" in match.group("path") + "/" or match.group("path").endswith("/.."):
        return "", [("backup_remote", f"path must not climb with '..', got {value!r}")]
    return value, []


#: days a destroyed municipality's repository is kept on control (``destroy`` keeps it)
DEFAULT_RETENTION_AFTER_DESTROY = 90


def backup_retention_after_destroy(value: Any) -> tuple[int, Problems]:
    """Fleet-wide: days after ``destroy`` before control removes the repository."""
    if value is None:
        return DEFAULT_RETENTION_AFTER_DESTROY, []
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 36500:
        why = f"must be a number of days from 1 to 36500, got {value!r}"
        return DEFAULT_RETENTION_AFTER_DESTROY, [("backup_retention_after_destroy", why)]
    return value, []

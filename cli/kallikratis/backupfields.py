"""Inventory fields of the backups: retention (``backup_keep``), the off-site copy
(``backup_remote``) and how long a destroyed municipality's repository is kept
(``backup_retention_after_destroy``, fleet-wide) and the restore tests' isolated network
(``restore_test_network``, fleet-wide).

Pure parsing like :mod:`kallikratis.opsfields`: each function takes the raw value and returns
the model value plus a list of (field, message) problems; :mod:`kallikratis.inventory` adds
file and entry. Both are set for the fleet in group_vars and may be overridden per
municipality (a municipality's ``backup_keep`` replaces the fleet's mapping as a whole, as
Ansible's variable precedence does; a key it leaves out takes the default).
"""

from __future__ import annotations

import ipaddress
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


#: the isolated network of restore tests (``kallikratis restore-test``): host-only, small
DEFAULT_RESTORE_TEST_NETWORK = "10.77.250.0/28"
RESTORE_TEST_FALLBACKS = (DEFAULT_RESTORE_TEST_NETWORK, "10.78.250.0/28")


def restore_test_network(value: Any, fleet_cidr: ipaddress.IPv4Network) -> tuple[str, Problems]:
    """Fleet-wide: the subnet of the restore tests' isolated network (a /24 to a /29 of the
    private ranges, apart from the fleet network); its gateway is the controller's side."""
    field = "restore_test_network"
    if value is None:  # the default, or the first fallback apart from the fleet network
        fits = [
            n for n in RESTORE_TEST_FALLBACKS if not ipaddress.IPv4Network(n).overlaps(fleet_cidr)
        ]
        return fits[0], []
    text = value
    try:
        net = ipaddress.IPv4Network(text if isinstance(text, str) else "", strict=True)
    except ValueError as exc:
        return DEFAULT_RESTORE_TEST_NETWORK, [
            (field, f"not an IPv4 network like 10.77.250.0/28: {exc}")
        ]
    if not 24 <= net.prefixlen <= 29 or not net.is_private:
        why = f"must be a private /24 to /29 (a few throwaway VMs), got {text}"
        return DEFAULT_RESTORE_TEST_NETWORK, [(field, why)]
    if net.overlaps(fleet_cidr):
        why = f"{net} overlaps the fleet network {fleet_cidr}: the restore tests need their own"
        return DEFAULT_RESTORE_TEST_NETWORK, [(field, why)]
    return str(net), []

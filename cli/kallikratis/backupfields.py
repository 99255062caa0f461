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

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Mapping
from typing import Any

from kallikratis import model

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


REMOTE_KEYS = ("url", "host_key")
REMOTE_EXAMPLE = (
    "{url: ssh://kk@offsite.example.org:22/srv/kallikratis, host_key: 'ssh-ed25519 AAAA...'}"
)
#: host key types a pinned line may have (what OpenSSH's sshd offers by default)
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


def _remote_url(url: Any) -> tuple[dict[str, Any] | None, str]:
    """(parts, "") or (None, why) of the remote's base URL."""
    match = REMOTE_RE.fullmatch(url) if isinstance(url, str) else None
    why = f"must be an ssh:// URL like ssh://kk@offsite.example.org:22/srv/kallikratis, got {url!r}"
    if match is None:
        return None, why
    if match.group("user") is None:
        return None, f"must name the remote's login (ssh://USER@host...), got {url!r}"
    port = int(match.group("port") or 22)
    if not 1 <= port <= 65535:
        return None, f"port must be 1-65535, got {port}"
    path = match.group("path")
    segments = path.split("/")[1:]
    if path == "/" or path.endswith("/") or any(s in ("", ".", "..", "~") for s in segments):
        why = (
            "path must be absolute and plain (no '.', '..', '~', '//' or trailing '/'): the "
            f"remote's forced command restricts each key to <path>/<slug>, got {url!r}"
        )
        return None, why
    if "~" in path:
        return None, f"path must be absolute (no '~'), got {url!r}"
    return {
        "user": match.group("user"),
        "host": match.group("host"),
        "port": port,
        "path": path,
    }, ""


def host_key(value: Any) -> tuple[str, str]:
    """("type base64", "") or ("", why): one public host key, its blob checked."""
    why = f"must be one public host key like 'ssh-ed25519 AAAA...' (the remote's), got {value!r}"
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        return "", why
    words = value.split()
    if len(words) not in (2, 3) or words[0] not in HOST_KEY_TYPES:
        return "", why
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        return "", f"the key is not valid base64: {value!r}"
    (size,) = struct.unpack(">I", blob[:4]) if len(blob) >= 4 else (0,)
    if blob[4 : 4 + size].decode("ascii", "replace") != words[0] or len(blob) < 4 + size + 16:
        return "", f"the key's data is not a {words[0]} key: {value!r}"
    return f"{words[0]} {words[1]}", ""


def backup_remote(value: Any) -> tuple[model.BackupRemote | None, Problems]:
    """The off-site second copy: {url, host_key} (None or absent = none)."""
    if value is None or value == "" or value == {}:
        return None, []
    if not isinstance(value, dict):
        return None, [("backup_remote", f"must be a mapping like {REMOTE_EXAMPLE}, got {value!r}")]
    problems: Problems = []
    unknown = sorted(str(k) for k in value if k not in REMOTE_KEYS)
    if unknown:
        problems.append(("backup_remote", f"unknown keys {unknown} (known: {list(REMOTE_KEYS)})"))
    parts, why = _remote_url(value.get("url"))
    if parts is None:
        problems.append(("backup_remote.url", why))
    if "host_key" not in value:
        why = "missing: the remote's SSH host key is pinned on the VMs, never trusted on first use"
        problems.append(("backup_remote.host_key", why))
        key = ""
    else:
        key, why = host_key(value["host_key"])
        if why:
            problems.append(("backup_remote.host_key", why))
    if problems or parts is None:
        return None, problems
    return model.BackupRemote(url=str(value["url"]), host_key=key, **parts), []


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

"""Inventory fields for operating the fleet: watched services, snapshots kept (how many, how
long), apt sources.

Pure parsing: each function takes the raw value and returns the model value plus a list of
(field, message) problems; :mod:`kallikratis.inventory` adds file and entry.
"""

from __future__ import annotations

import re
from typing import Any

Problems = list[tuple[str, str]]

UNIT_RE = re.compile(r"^[A-Za-z0-9@._:-]+$")
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
URI_RE = re.compile(r"^https?://[^\s/?#]+(/\S*)?$")
TOKEN_RE = re.compile(r"^[^\s#]+$")
ABS_PATH_RE = re.compile(r"^/[^\s]*$")
KEY_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
KEY_END = "-----END PGP PUBLIC KEY BLOCK-----"
SOURCE_KEYS = ("name", "uris", "suites", "components", "signed_by")


def watch_services(value: Any) -> tuple[tuple[str, ...], Problems]:
    """systemd unit names that must be running, e.g. ``[kallikratis-probe.service]``."""
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), [("watch_services", f"must be a list of systemd unit names, got {value!r}")]
    problems: Problems = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not UNIT_RE.fullmatch(name):
            why = f"not a systemd unit name (letters, digits, @ . _ : -): {name!r}"
            problems.append((f"watch_services[{i}]", why))
    if problems:
        return (), problems
    return tuple(value), []


def patch_keep_snapshots(value: Any) -> tuple[int, Problems]:
    """How many pre-patch snapshots a VM keeps (>= 1)."""
    if value is None:
        return 1, []
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return 1, [("patch_keep_snapshots", f"must be a positive integer, got {value!r}")]
    return value, []


AGE_RE = re.compile(r"^([1-9][0-9]{0,4})([hdw])$")
AGE_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_SNAPSHOT_MAX_AGE = 7 * 86400


def patch_snapshot_max_age(value: Any) -> tuple[int, Problems]:
    """How old a pre-patch snapshot may get before it is deleted, as ``"7d"``, ``"36h"`` or
    ``"2w"`` (seconds in the model). Memory snapshots hold personal data (sessions, form
    contents in RAM): they are not kept for ever. Hours at least: a patch run itself may take
    hours, and its own snapshots are never pruned while it runs."""
    if value is None:
        return DEFAULT_SNAPSHOT_MAX_AGE, []
    match = AGE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        why = f"must be a duration like '7d', '36h' or '2w' (hours at least), got {value!r}"
        return DEFAULT_SNAPSHOT_MAX_AGE, [("patch_snapshot_max_age", why)]
    return int(match.group(1)) * AGE_UNITS[match.group(2)], []


def apt_sources(value: Any) -> tuple[tuple[dict[str, Any], ...], Problems]:
    """deb822 source entries; () leaves the image's own sources alone."""
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), [("apt_sources", f"must be a list of source entries, got {value!r}")]
    problems: Problems = []
    out = []
    seen: set[str] = set()
    for i, entry in enumerate(value):
        fld = f"apt_sources[{i}]"
        parsed = _source(fld, entry, problems)
        if parsed is None:
            continue
        if parsed["name"] in seen:
            problems.append((f"{fld}.name", f"{parsed['name']!r} is used by another entry"))
        seen.add(parsed["name"])
        out.append(parsed)
    if problems:
        return (), problems
    return tuple(out), []


def _source(fld: str, entry: Any, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        problems.append((fld, f"must be a mapping with {', '.join(SOURCE_KEYS)}"))
        return None
    before = len(problems)
    unknown = sorted(str(k) for k in entry if k not in SOURCE_KEYS)
    if unknown:
        problems.append((fld, f"unknown keys {unknown} (known: {list(SOURCE_KEYS)})"))
    name = entry.get("name")
    if not isinstance(name, str) or not SOURCE_NAME_RE.fullmatch(name):
        problems.append(
            (f"{fld}.name", f"must be a file-name-safe name (A-Z a-z 0-9 . _ -), got {name!r}")
        )
    uris = _words(fld, "uris", entry.get("uris"), URI_RE, "http:// or https:// URLs", problems)
    listed = len(problems)
    suites = _words(fld, "suites", entry.get("suites"), TOKEN_RE, "suite names", problems)
    components = _words(
        fld, "components", entry.get("components", []), TOKEN_RE, "component names", problems, True
    )
    if len(problems) == listed:
        _flat_or_not(fld, suites, components, problems)
    signed_by = _signed_by(f"{fld}.signed_by", entry.get("signed_by"), problems)
    if len(problems) > before:
        return None
    return {
        "name": name,
        "uris": uris,
        "suites": suites,
        "components": components,
        "signed_by": signed_by,
    }


def _flat_or_not(
    fld: str, suites: tuple[str, ...], components: tuple[str, ...], problems: Problems
) -> None:
    """sources.list(5): an exact path (a suite ending in /) takes no components; a suite does."""
    flat = [s.endswith("/") for s in suites]
    if any(flat) and not all(flat):
        problems.append((f"{fld}.suites", "mixes exact paths (ending in '/') and suite names"))
    elif all(flat) and components:
        problems.append((f"{fld}.components", "must be empty for exact paths (suites ending in /)"))
    elif not any(flat) and not components:
        problems.append((f"{fld}.components", "must list components (e.g. [main])"))


def _words(
    fld: str,
    key: str,
    value: Any,
    pattern: re.Pattern[str],
    what: str,
    problems: Problems,
    may_be_empty: bool = False,
) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not may_be_empty):
        problems.append((f"{fld}.{key}", f"must be a non-empty list of {what}, got {value!r}"))
        return ()
    bad = [v for v in value if not isinstance(v, str) or not pattern.fullmatch(v)]
    if bad:
        problems.append((f"{fld}.{key}", f"must be a list of {what}; not valid: {bad!r}"))
        return ()
    return tuple(value)


def _signed_by(fld: str, value: Any, problems: Problems) -> str:
    """An absolute keyring path in the VM, or an ASCII-armored public key block."""
    if isinstance(value, str) and ABS_PATH_RE.fullmatch(value):
        return value
    if isinstance(value, str) and value.strip().startswith(KEY_BEGIN):
        text = value.strip()
        lines = [line.rstrip() for line in text.splitlines()]
        if lines[-1] == KEY_END and all(line == line.lstrip() for line in lines):
            return "\n".join(lines)
        problems.append((fld, f"an armored key must end with {KEY_END} (no indented lines)"))
        return ""
    problems.append(
        (fld, "must be an absolute keyring path in the VM or an ASCII-armored public key block")
    )
    return ""

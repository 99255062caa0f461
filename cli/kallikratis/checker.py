"""The inventory checker: collects every problem (file, entry, field) while values are parsed.

Shared by the fleet-wide sections (:mod:`kallikratis.inventory`) and the municipality entries
(:mod:`kallikratis.municipalities`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

from kallikratis.errors import Problem
from kallikratis.varsfiles import RawInventory, Vars

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
T = TypeVar("T")


def is_fqdn(name: Any) -> bool:
    if not isinstance(name, str) or not 1 <= len(name) <= 253 or "." not in name:
        return False
    return all(DNS_LABEL.fullmatch(label) for label in name.split("."))


def _defined_by(raw: RawInventory, host: str, key: str) -> str:
    """The host, or the group whose variables give *host* its value of *key* (as Ansible
    merges them: all, then the other groups sorted, then the host)."""
    if key in raw.host_vars.get(host, Vars()).values:
        return host
    groups = ["all"] + sorted(g for g, hs in raw.groups.items() if host in hs and g != "all")
    for group in reversed(groups):
        if key in raw.group_vars.get(group, Vars()).values:
            return group
    return host


class Checker:
    """Collects problems while turning raw variables into model values."""

    def __init__(self, raw: RawInventory) -> None:
        self.raw = raw
        self.src = str(raw.hosts_file)
        self.problems: list[Problem] = []
        self._shared: dict[tuple[str, str, str], Any] = {}

    def add(self, vars_: Vars | None, entry: str, fld: str, msg: str) -> None:
        where = vars_.where(re.split(r"[.\[]", fld)[0], self.src) if vars_ else self.src
        self.problems.append(Problem(where, entry, fld, msg))

    def shared(self, hv: Vars, slug: str, key: str, parse: Callable[[Any], tuple[T, Any]]) -> T:
        """Parse *key* of a municipality; a value set for a group is checked (and reported,
        under the group's name) once, not once per member."""
        entry = _defined_by(self.raw, slug, key)
        memo_key = (entry, hv.where(key, self.src), key)
        if entry != slug and memo_key in self._shared:
            return cast(T, self._shared[memo_key])
        value, problems = parse(hv.get(key))
        for fld, msg in problems:
            self.add(hv, entry, fld, msg)
        self._shared[memo_key] = value
        return value

    def fleetwide(self, gvars: Vars, raw: Any, parse: Callable[[Any], tuple[T, Any]]) -> T:
        """Parse a fleet-wide value; its problems are reported under the entry `all`."""
        value, problems = parse(raw)
        for fld, msg in problems:
            self.add(gvars, "all", fld, msg)
        return value

    def positive_int(self, vars_: Vars, entry: str, fld: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.add(vars_, entry, fld, f"must be a positive integer, got {value!r}")
            return 1
        return value

    def string(self, vars_: Vars, entry: str, fld: str, value: Any, default: str = "") -> str:
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(vars_, entry, fld, f"must be a non-empty string, got {value!r}")
            return default
        return value

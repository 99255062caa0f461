"""Inventory-wide guards that look at every variable, not one field at a time.

* No control characters in any string (a newline in a name must never become a new line in a
  config file): every value of every group and host, keys and nested values included. The only
  multi-line value is an ASCII-armored apt key (``apt_sources[N].signed_by``), whose newlines
  :mod:`kallikratis.opsfields` checks.
* No ``ansible_*`` variable (connection, user, become, interpreter...) for a municipality, in
  its entry, its host_vars or the vars of a group it belongs to: one would make Ansible run the
  stack's tasks as root somewhere else, the controller included (``ansible_connection:
  local``). A fleet that really needs one opts in with ``allow_connection_overrides: true``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kallikratis.checker import Checker
from kallikratis.fleetfields import has_control
from kallikratis.varsfiles import Vars, VaultText

OPT_IN = "allow_connection_overrides"
#: fields whose value is multi-line by design (newlines allowed, other controls not)
MULTILINE = re.compile(r"apt_sources\[\d+\]\.signed_by")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, text) of every string in *value*, mapping keys included."""
    if isinstance(value, VaultText):
        return  # encrypted: opaque here, its lines are the vault's own format
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield sub_path, key
            yield from _strings(sub, sub_path)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _strings(sub, f"{path}[{i}]")


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith((b + ".", b + "[")) or b.startswith((a + ".", a + "["))


def reject_control_characters(chk: Checker) -> None:
    """Every string of the inventory; a field already reported is not reported twice."""
    reported = {(p.file, p.entry, p.field) for p in chk.problems}
    sources = [*chk.raw.group_vars.items(), *chk.raw.host_vars.items()]
    for entry, vars_ in sources:
        if has_control(entry):
            chk.add(None, repr(entry), "name", "contains control characters (a newline?)")
            continue
        for fld, text in _strings(vars_.values, ""):
            bad = has_control(text.replace("\n", "")) if MULTILINE.fullmatch(fld) else None
            if bad is None:
                bad = has_control(text)
            if not bad:
                continue
            where = vars_.where(re.split(r"[.\[]", fld)[0], chk.src)
            # a group's value may already be reported under one of its members
            entries = {entry, *chk.raw.groups.get(entry, ())}
            if any(f == where and e in entries and _related(fld, x) for f, e, x in reported):
                continue
            shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:57] + "..."
            chk.add(vars_, entry, fld, f"contains control characters (a newline?): {shown}")


def refuse_connection_overrides(chk: Checker, gvars: Vars) -> None:
    """``ansible_*`` variables reaching a municipality, unless the fleet opts in."""
    allowed = gvars.get(OPT_IN, False)
    if not isinstance(allowed, bool):
        chk.add(gvars, "all", OPT_IN, f"must be true or false, got {allowed!r}")
        allowed = False
    raw = chk.raw
    municipalities = set(raw.groups.get("municipalities", []))
    for host in sorted(municipalities):
        if OPT_IN in raw.host_vars.get(host, Vars()).values:
            why = "a fleet-wide setting: set it in group_vars/all, not for one municipality"
            chk.add(raw.host_vars[host], host, OPT_IN, why)
    if allowed:
        return
    groups = [g for g, hosts in raw.groups.items() if municipalities & set(hosts) or g == "all"]
    sources = [(g, raw.group_vars.get(g, Vars())) for g in sorted(groups)]
    sources += [(h, raw.host_vars.get(h, Vars())) for h in sorted(municipalities)]
    for entry, vars_ in sources:
        for key in sorted(k for k in vars_.values if k.startswith("ansible_")):
            why = (
                "Ansible connection variables are computed by Kallikratis for a municipality "
                f"(pinned SSH to its VM); an override could run its tasks elsewhere as root. "
                f"A fleet that needs one sets {OPT_IN}: true in group_vars/all"
            )
            chk.add(vars_, entry, key, why)

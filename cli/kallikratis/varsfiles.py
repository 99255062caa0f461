"""Read an Ansible YAML inventory and its group_vars/host_vars the way Ansible does.

Every value remembers the file it came from, so validation can name it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kallikratis.errors import InventoryError, Problem

VARS_EXTENSIONS = (".yml", ".yaml", ".json")


class VaultText(str):
    """An ansible-vault encrypted value (``!vault``); kept opaque, never decrypted here."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


_Loader.add_constructor("!vault", lambda loader, node: VaultText(loader.construct_scalar(node)))
_Loader.add_constructor("!unsafe", lambda loader, node: str(loader.construct_scalar(node)))


def is_vault_file(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(14) == b"$ANSIBLE_VAULT"


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; a syntax error becomes an InventoryError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError([Problem(str(path), "", "", f"cannot read: {exc}")]) from exc
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - restricted SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(
            [Problem(str(path), "", "", f"YAML syntax error: {where}{what}")]
        ) from exc


@dataclass
class Vars:
    """A variable mapping where every key remembers its source file."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def update(self, data: Any, source: str, problems: list[Problem], entry: str = "") -> None:
        if data is None:
            return
        if not isinstance(data, dict):
            problems.append(Problem(source, entry, "", "must be a mapping of variables"))
            return
        for key, value in data.items():
            self.values[str(key)] = value
            self.origin[str(key)] = source

    def merged(self, other: Vars) -> Vars:
        out = Vars(dict(self.values), dict(self.origin))
        out.values.update(other.values)
        out.origin.update(other.origin)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def where(self, key: str, fallback: str) -> str:
        return self.origin.get(key, fallback)


@dataclass
class RawInventory:
    """Groups, hosts and variables as Ansible would see them, before validation."""

    hosts_file: Path
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> hosts (direct + children)
    group_vars: dict[str, Vars] = field(default_factory=dict)
    host_vars: dict[str, Vars] = field(default_factory=dict)
    host_order: list[str] = field(default_factory=list)

    def vars_for_host(self, host: str) -> Vars:
        out = self.group_vars.get("all", Vars())
        for group in sorted(g for g, hs in self.groups.items() if host in hs and g != "all"):
            out = out.merged(self.group_vars.get(group, Vars()))
        return out.merged(self.host_vars.get(host, Vars()))


def find_hosts_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("hosts.yml", "hosts.yaml"):
            if (path / name).is_file():
                return path / name
        raise InventoryError([Problem(str(path), "", "", "no hosts.yml in inventory directory")])
    if path.is_file():
        return path
    raise InventoryError([Problem(str(path), "", "", "inventory not found")])


def _vars_files(base: Path) -> Iterator[Path]:
    """`base.yml`, or every vars file below the directory `base/` (sorted), like Ansible."""
    for ext in VARS_EXTENSIONS:
        if base.with_name(base.name + ext).is_file():
            yield base.with_name(base.name + ext)
    if base.is_dir():
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix in VARS_EXTENSIONS:
                yield p


def load_raw(path: Path) -> RawInventory:
    hosts_file = find_hosts_file(path)
    data = read_yaml(hosts_file)
    problems: list[Problem] = []
    raw = RawInventory(hosts_file)
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        problems.append(Problem(str(hosts_file), "", "all", "top level must be a mapping 'all:'"))
        raise InventoryError(problems)
    _walk_group(raw, "all", data["all"], problems)
    for group in raw.groups:
        for vf in _vars_files(hosts_file.parent / "group_vars" / group):
            raw.group_vars.setdefault(group, Vars()).update(read_yaml(vf), str(vf), problems)
    for host in raw.host_order:
        for vf in _vars_files(hosts_file.parent / "host_vars" / host):
            if is_vault_file(vf):
                continue  # whole-file ansible-vault secrets: for Ansible, not for validation
            raw.host_vars.setdefault(host, Vars()).update(read_yaml(vf), str(vf), problems, host)
    if problems:
        raise InventoryError(problems)
    return raw


def _walk_group(raw: RawInventory, name: str, body: Any, problems: list[Problem]) -> list[str]:
    src = str(raw.hosts_file)
    members: list[str] = []
    if body is None:
        body = {}
    if not isinstance(body, dict):
        problems.append(Problem(src, name, "", "group must be a mapping (hosts/children/vars)"))
        return members
    hosts = body.get("hosts") or {}
    if not isinstance(hosts, dict):
        problems.append(Problem(src, name, "hosts", "must be a mapping of host names"))
        hosts = {}
    for host, hvars in hosts.items():
        host = str(host)
        if host not in raw.host_order:
            raw.host_order.append(host)
        raw.host_vars.setdefault(host, Vars()).update(hvars, src, problems, host)
        members.append(host)
    raw.group_vars.setdefault(name, Vars()).update(body.get("vars"), src, problems, name)
    children = body.get("children") or {}
    if not isinstance(children, dict):
        problems.append(Problem(src, name, "children", "must be a mapping of groups"))
        children = {}
    for child, child_body in children.items():
        members.extend(_walk_group(raw, str(child), child_body, problems))
    existing = raw.groups.setdefault(name, [])
    existing.extend(h for h in members if h not in existing)
    return members

"""Helpers of the unit suite (plain functions and classes; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kallikratis import inventory, model, paths
from kallikratis.errors import InventoryError, Problem
from kallikratis.keys import KeyPair

CRETE = paths.PROJECT_ROOT / "inventories" / "crete"
DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN_ENV = "KALLIKRATIS_UPDATE_GOLDEN"
SLUGS = ("archanes-asterousia", "minoa-pediada", "hersonissos")
GREEK = {
    "archanes-asterousia": "Δήμος Αρχανών-Αστερουσίων",
    "minoa-pediada": "Δήμος Μινώα Πεδιάδας",
    "hersonissos": "Δήμος Χερσονήσου",
}
#: Every character class that breaks naive XML/YAML/Jinja/shell quoting and is still a valid
#: name: control characters (a newline, U+2028) are refused by validation (test_render.py
#: renders a newline that got past it anyway).
HOSTILE_NAME = (
    "Δήμος \"Χερσονήσου\" & 'Μαλίων' <b>x</b> ]]> back\\slash {{ vm.slug }} {% raw %} "
    "100% $HOME `id` τέλος"
)


def fixed_host_key() -> KeyPair:
    return KeyPair(
        (DATA / "host_ed25519").read_text(), (DATA / "host_ed25519.pub").read_text().strip()
    )


def fixed_client_public_key() -> str:
    return (DATA / "client_ed25519.pub").read_text().strip()


def install_fixed_client_key(state_dir: Path) -> None:
    """What KeyStore.ensure_client_key reads: state/ssh/id_ed25519(.pub)."""
    ssh = state_dir / "ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / "client_ed25519", ssh / "id_ed25519")
    shutil.copyfile(DATA / "client_ed25519.pub", ssh / "id_ed25519.pub")
    (ssh / "id_ed25519").chmod(0o600)


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


class InventoryCopy:
    """A copy of inventories/crete under tmp_path, with helpers for one-line mutations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts = root / "hosts.yml"
        self.fleet_vars = root / "group_vars" / "all" / "fleet.yml"
        self.hv_vars = root / "group_vars" / "hypervisors.yml"

    def host_vars_file(self, slug: str) -> Path:
        return self.root / "host_vars" / f"{slug}.yml"

    def edit(self, path: Path, change: Callable[[Any], Any]) -> None:
        """Apply *change* to the parsed file in place and write it back."""
        data = read_yaml(path)
        change(data)
        write_yaml(path, data)

    def municipalities(self, data: dict[str, Any]) -> dict[str, Any]:
        return data["all"]["children"]["municipalities"]["hosts"]

    def set_host(self, slug: str, **values: Any) -> None:
        """Set variables on a municipality's entry in hosts.yml."""

        def change(data: dict[str, Any]) -> None:
            entry = self.municipalities(data).setdefault(slug, {}) or {}
            entry.update(values)
            self.municipalities(data)[slug] = entry

        self.edit(self.hosts, change)

    def unset_host(self, slug: str, key: str) -> None:
        self.edit(self.hosts, lambda d: self.municipalities(d)[slug].pop(key))

    def add_host(self, slug: str, **values: Any) -> None:
        self.set_host(slug, **values)

    def add_many(self, count: int, prefix: str = "dimos") -> None:
        """Add *count* municipalities <prefix>-000... in one write."""
        self.edit(
            self.hosts,
            lambda d: self.municipalities(d).update(
                {f"{prefix}-{i:03d}": {"display_name": f"Δήμος {i}"} for i in range(count)}
            ),
        )

    def remove_host(self, slug: str) -> None:
        self.edit(self.hosts, lambda d: self.municipalities(d).pop(slug))

    def rename_host(self, old: str, new: str) -> None:
        def change(data: dict[str, Any]) -> None:
            hosts = self.municipalities(data)
            hosts[new] = hosts.pop(old)

        self.edit(self.hosts, change)

    def remove_central(self) -> None:
        self.edit(self.hosts, lambda d: d["all"]["children"].pop("central", None))

    def add_central(self, slug: str = "control", **values: Any) -> None:
        """An entry in the `central` group (the shipped one: control, central_roles [control])."""

        def change(data: dict[str, Any]) -> None:
            group = data["all"]["children"].setdefault("central", {"hosts": {}})
            group["hosts"][slug] = {"central_roles": ["control"], **values}

        self.edit(self.hosts, change)

    def set_host_var_file(self, slug: str, **values: Any) -> None:
        """Set variables in host_vars/<slug>.yml (created if missing)."""
        path = self.host_vars_file(slug)
        data = read_yaml(path) if path.exists() else {}
        data.update(values)
        write_yaml(path, data)

    def set_fleet(self, **values: Any) -> None:
        self.edit(self.fleet_vars, lambda d: d.update(values))

    def set_profile(self, profile: str, **values: Any) -> None:
        self.edit(self.fleet_vars, lambda d: d["vm_profiles"][profile].update(values))

    def set_hypervisor(self, **values: Any) -> None:
        self.edit(
            self.hosts,
            lambda d: d["all"]["children"]["hypervisors"]["hosts"]["hv01"].update(values),
        )

    def use_test_driver(self) -> str:
        """Point hv01 at a private libvirt test-driver node (isolated per test)."""
        node = self.root.parent / "node.xml"
        node.write_text("<node/>\n")
        uri = f"test://{node}"
        self.set_hypervisor(libvirt_uri=uri)
        return uri

    def load(self) -> model.Fleet:
        return inventory.load(self.root)

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


def updating_golden() -> bool:
    """KALLIKRATIS_UPDATE_GOLDEN=1 asks golden tests to rewrite their files. Never under CI
    (the CI variable set): there a golden test must compare, or it could not fail."""
    if os.environ.get(UPDATE_GOLDEN_ENV) != "1":
        return False
    if os.environ.get("CI"):
        pytest.fail(
            f"{UPDATE_GOLDEN_ENV}=1 is refused under CI (CI={os.environ['CI']!r}): golden "
            "files are regenerated by a developer and reviewed, never by the pipeline",
            pytrace=False,
        )
    return True


def check_golden(name: str, text: str) -> None:
    """Compare *text* with tests/unit/golden/<name>; KALLIKRATIS_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if updating_golden():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}: run with KALLIKRATIS_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its golden file {path}"


# --------------------------------------------------------------------------- bad inputs

HOSTS = "hosts.yml"
FLEET = "group_vars/all/fleet.yml"
HERSO_VARS = "host_vars/hersonissos.yml"


@dataclass(frozen=True)
class Bad:
    """One mutation of the Crete copy and the problem it must produce."""

    mutate: Callable[[InventoryCopy], None]
    file: str  # relative to the inventory directory
    entry: str
    field: str
    text: str = ""  # a fragment the message must contain
    also: tuple[str, ...] = ()  # fields of the same entry that are wrong as a consequence


def assert_one_problem(err: InventoryError, root: Path, case: Bad) -> Problem:
    assert err.exit_code == 2
    expected_file = str(root / case.file)
    matching = [
        p
        for p in err.problems
        if p.file == expected_file and p.entry == case.entry and p.field == case.field
    ]
    assert matching, f"no problem for {case.file}: {case.entry}: {case.field} in {err.problems}"
    others = [(p.file, p.entry, p.field) for p in err.problems if p is not matching[0]]
    assert sorted(others) == [(expected_file, case.entry, f) for f in case.also], (
        f"one mutation, one problem expected: {err.problems}"
    )
    problem = matching[0]
    assert case.text in problem.message
    # the rendered message a sysadmin reads carries file, entry and field too
    assert f"{expected_file}: {case.entry}: {case.field}: " in err.message
    return problem


def systemd_verify_units(
    directory: Path, files: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """*files* (unit name -> text) written into *directory*, then `systemd-analyze verify`."""
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", *(str(directory / n) for n in sorted(files))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

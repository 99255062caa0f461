"""Inventory text is hostile: control characters anywhere, and Ansible connection overrides for
a municipality, are refused with file, entry and field (exit code 2, nothing changed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kallikratis import paths
from kallikratis.cli import main_group
from kallikratis.errors import InventoryError
from support import CRETE, FLEET, HERSO_VARS, HOSTS, InventoryCopy

NL = "\n[Service]\nExecStartPre=+/bin/sh -c 'id > /root/pwned'"
Mutation = Callable[[InventoryCopy], None]


def _host(**values: Any) -> Mutation:
    return lambda i: i.set_host("hersonissos", **values)


def _host_file(**values: Any) -> Mutation:
    return lambda i: i.set_host_var_file("hersonissos", **values)


def _fleet(**values: Any) -> Mutation:
    return lambda i: i.set_fleet(**values)


def _apt(**values: Any) -> Mutation:
    return lambda i: i.edit(i.fleet_vars, lambda d: d["apt_sources"][0].update(values))


# case -> (mutation, file, entry, field): every free-text field, municipality- and fleet-level
H = "hersonissos"
CONTROL_CASES: dict[str, tuple[Mutation, str, str, str]] = {
    "display_name": (_host(display_name="Δήμος" + NL), HOSTS, "hersonissos", "display_name"),
    "display_name-host-vars": (
        _host_file(display_name="Δήμος\r\nX"),
        HERSO_VARS,
        "hersonissos",
        "display_name",
    ),
    "display_name-u2028": (_host(display_name="Δήμος\u2028X"), HOSTS, H, "display_name"),
    "display_name-nel-json": (
        lambda i: (i.root / "host_vars" / "hersonissos.json").write_text(
            json.dumps({"display_name": "Δήμος\x85X"})  # PyYAML cannot write a NEL
        ),
        "host_vars/hersonissos.json",
        "hersonissos",
        "display_name",
    ),
    "display_name-esc": (_host(display_name="Δήμος\x1b[2J"), HOSTS, "hersonissos", "display_name"),
    "domain": (_host(domain="h.crete.kallikratis.test\n"), HOSTS, "hersonissos", "domain"),
    "profile": (_host(profile="small\n"), HOSTS, "hersonissos", "profile"),
    "hypervisor": (_host(hypervisor="hv01\n"), HOSTS, "hersonissos", "hypervisor"),
    "language": (_host(language="el\n"), HOSTS, "hersonissos", "language"),
    "branding.logo": (
        _host(branding={"logo": "/logo.png\x00"}),
        HOSTS,
        "hersonissos",
        "branding.logo",
    ),
    "patch_window": (_host(patch_window="Sun 02:00-05:00\n"), HOSTS, "hersonissos", "patch_window"),
    "watch_services": (_host(watch_services=["a.service\n"]), HOSTS, H, "watch_services[0]"),
    "datasets": (_host(datasets=["budget_lines\n"]), HOSTS, "hersonissos", "datasets"),
    "free-text-extra-var": (_host(notes="note" + NL), HOSTS, "hersonissos", "notes"),
    "nested-extra-var": (
        _host_file(notes={"office": ["ok", "x\ny"]}),  # `contact` is a portal field now
        HERSO_VARS,
        "hersonissos",
        "notes.office[1]",
    ),
    "fleet_image": (_fleet(fleet_image="debian13\n"), FLEET, "all", "fleet_image"),
    "fleet_name": (_fleet(fleet_name="crete\n"), FLEET, "all", "fleet_name"),
    "default_profile": (_fleet(default_profile="small\x7f"), FLEET, "all", "default_profile"),
    "default_modules": (_fleet(default_modules=["portal\n"]), FLEET, "all", "default_modules[0]"),
    "apt-suites": (_apt(suites=["trixie\x1b"]), FLEET, "all", "apt_sources[0].suites[0]"),
    "apt-uris": (_apt(uris=["http://deb.debian.org/\x01"]), FLEET, "all", "apt_sources[0].uris[0]"),
    "apt-signed-by": (_apt(signed_by="/k.pgp\x0b"), FLEET, "all", "apt_sources[0].signed_by"),
    "libvirt_uri": (
        lambda i: i.set_hypervisor(libvirt_uri="qemu:///sys\ntem"),
        HOSTS,
        "hv01",
        "libvirt_uri",
    ),
}


@pytest.mark.parametrize("case_id", list(CONTROL_CASES))
def test_control_characters_are_refused_in_every_field(inv: InventoryCopy, case_id: str) -> None:
    mutate, file, entry, fld = CONTROL_CASES[case_id]
    mutate(inv)
    before = inv.snapshot()
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert err.value.exit_code == 2
    found = [(p.file, p.entry, p.field) for p in err.value.problems]
    assert (str(inv.root / file), entry, fld) in found, err.value.message
    assert len([f for f in found if f[1:] == (entry, fld)]) == 1, "reported once"
    assert inv.snapshot() == before


def test_an_armored_apt_key_keeps_its_newlines(inv: InventoryCopy) -> None:
    key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----"
    _apt(signed_by=key)(inv)
    assert inv.load().municipalities[0].apt_sources[0]["signed_by"] == key


def test_validate_refuses_a_newline_display_name_with_exit_code_2(inv: InventoryCopy) -> None:
    inv.set_host("hersonissos", display_name="Δήμος" + NL)
    before = inv.snapshot()
    result = CliRunner().invoke(main_group, ["-i", str(inv.root), "validate", "--offline"])
    assert isinstance(result.exception, InventoryError) and result.exception.exit_code == 2
    assert f"{inv.hosts}: hersonissos: display_name: contains control" in result.exception.message
    assert inv.snapshot() == before


# --------------------------------------------------------------------------- ansible_* overrides

CONNECTION_VARS = {
    "ansible_connection": "local",
    "ansible_host": "127.0.0.1",
    "ansible_port": 2222,
    "ansible_user": "root",
    "ansible_ssh_common_args": "-o ProxyCommand=/tmp/x",  # a planted proxy: refused
    "ansible_become_method": "su",
    "ansible_python_interpreter": "/tmp/py",
    "ansible_shell_executable": "/tmp/sh",
}


@pytest.mark.parametrize("where", ["entry", "host_vars", "group_vars-all", "group_vars-group"])
@pytest.mark.parametrize("key", list(CONNECTION_VARS))
def test_connection_overrides_are_refused(inv: InventoryCopy, where: str, key: str) -> None:
    value = CONNECTION_VARS[key]
    if where == "entry":
        inv.set_host("hersonissos", **{key: value})
        file, entry = inv.hosts, "hersonissos"
    elif where == "host_vars":
        inv.set_host_var_file("hersonissos", **{key: value})
        file, entry = inv.root / HERSO_VARS, "hersonissos"
    elif where == "group_vars-all":
        inv.set_fleet(**{key: value})
        file, entry = inv.fleet_vars, "all"
    else:
        file, entry = inv.root / "group_vars" / "municipalities.yml", "municipalities"
        file.write_text(json.dumps({key: value}))
    before = inv.snapshot()
    with pytest.raises(InventoryError) as err:
        inv.load()
    [problem] = err.value.problems
    assert (problem.file, problem.entry, problem.field) == (str(file), entry, key)
    assert "allow_connection_overrides" in problem.message
    assert err.value.exit_code == 2 and inv.snapshot() == before


def test_a_fleet_may_opt_in_to_connection_overrides(inv: InventoryCopy) -> None:
    inv.set_fleet(allow_connection_overrides=True)
    inv.set_host_var_file("hersonissos", ansible_port=2222)
    fleet = inv.load()
    assert fleet.get("hersonissos").vars["ansible_port"] == 2222


def test_hypervisor_vars_are_not_municipality_vars(inv: InventoryCopy) -> None:
    inv.edit(inv.hv_vars, lambda d: d.update(ansible_connection="local"))
    inv.load()


@pytest.mark.parametrize(
    ("mutate", "file", "entry"),
    [
        (_fleet(allow_connection_overrides="yes"), FLEET, "all"),
        (_host_file(allow_connection_overrides=True), HERSO_VARS, "hersonissos"),
    ],
    ids=["not-a-boolean", "not-fleet-level"],
)
def test_the_opt_in_is_a_fleet_boolean(
    inv: InventoryCopy, mutate: Mutation, file: str, entry: str
) -> None:
    mutate(inv)
    with pytest.raises(InventoryError) as err:
        inv.load()
    found = [(p.file, p.entry, p.field) for p in err.value.problems]
    assert (str(inv.root / file), entry, "allow_connection_overrides") in found


def test_ansible_inventory_refuses_a_connection_override(tmp_path: Path) -> None:
    """What plain ansible-playbook sees goes through the vars plugin, which loads (and so
    validates) the same inventory: a host_vars `ansible_connection: local` stops it too."""
    copy = tmp_path / "inventories" / "crete"
    shutil.copytree(CRETE, copy, ignore=shutil.ignore_patterns("vault.yml"))
    (copy / "host_vars" / "hersonissos.yml").write_text("ansible_connection: local\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "vault-password").write_text("unit-test-vault-password\n")
    (state / "vault-password").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KALLIKRATIS_"))}
    env.update(
        ANSIBLE_CONFIG=str(paths.PROJECT_ROOT / "ansible.cfg"),
        KALLIKRATIS_STATE_DIR=str(state),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        KALLIKRATIS_ADDRESSES="{}",
        PYTHONPATH=str(paths.PROJECT_ROOT / "cli"),
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(copy), "--list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 or '"ansible_connection"' not in proc.stdout, out
    assert "hersonissos: ansible_connection:" in out, out

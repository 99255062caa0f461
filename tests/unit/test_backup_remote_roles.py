"""The off-site copy as Ansible sees it: the vars plugin's ``kallikratis_backup_store.remote``,
roles/backup's files (control's borgmatic file, the off-site one, the pinned host keys)
rendered with and without a ``backup_remote``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from kallikratis import backupfields, stackvars
from role_render import ROLES, render, role_defaults
from support import InventoryCopy

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPbBUa67t5vBpRnBaIsZJ3gDVwGnLUPj6I4j1T2tGiGy"
CONTROL_KNOWN = (
    "10.42.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHuFIxw7FyUlEHhHHr2ZbXEg7ye+pl/qUrUyk3BBLUa0"
)
REMOTE_VARS = {
    "label": "offsite",
    "host": "offsite.example.org",
    "port": 2222,
    "repository": "ssh://kk@offsite.example.org:2222/srv/kallikratis/hersonissos",
    "known_hosts": [f"[offsite.example.org]:2222 {ED25519}"],
}


def _store(remote: dict[str, Any]) -> dict[str, Any]:
    return {
        "slug": "control",
        "host": "10.42.0.5",
        "user": "borg",
        "repository": "ssh://borg@10.42.0.5/./hersonissos",
        "known_hosts": [CONTROL_KNOWN],
        "remote": remote,
    }


def _tenant(remote: dict[str, Any]) -> dict[str, Any]:
    return {
        "ansible_managed": "Ansible managed (unit test)",
        "kallikratis_slug": "hersonissos",
        "kallikratis_modules": ["portal", "opendata", "education"],
        "kallikratis_backup_store": _store(remote),
        "kallikratis_maintenance_flag": "/etc/kallikratis/maintenance",
    }


def _evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """An expression of roles/backup evaluated as a play would (the role's defaults)."""
    values = role_defaults("backup") | variables
    return Templar(loader=DataLoader(), variables=values).template(trust_as_template(expression))


def _task(name_start: str) -> dict[str, Any]:
    tasks = yaml.safe_load((ROLES / "backup" / "tasks" / "main.yml").read_text())
    block = next(t for t in tasks if "block" in t)["block"]
    return next(t for t in block if t["name"].startswith(name_start))


# --------------------------------------------------------------------------- the vars plugin


def test_the_vars_plugin_hands_the_remote_to_each_municipality(
    inv: InventoryCopy, state_dir: Path
) -> None:
    inv.add_central()
    inv.set_fleet(
        backup_remote={
            "url": "ssh://kk@offsite.example.org:2222/srv/kallikratis",
            "host_key": ED25519,
        }
    )
    inv.set_host("minoa-pediada", backup_remote={})
    fleet = inv.load()
    herso = stackvars.municipality_vars(fleet, fleet.get("hersonissos"), state_dir)
    assert herso["kallikratis_backup_store"]["remote"] == REMOTE_VARS
    minoa = stackvars.municipality_vars(fleet, fleet.get("minoa-pediada"), state_dir)
    assert minoa["kallikratis_backup_store"]["remote"] == {}


# --------------------------------------------------------------------------- roles/backup


def test_without_a_remote_one_borgmatic_file_and_controls_key_only() -> None:
    variables = _tenant({})
    targets = _evaluate("{{ backup_targets }}", variables)
    assert targets == [
        {
            "file": "/etc/borgmatic/config.yaml",
            "repository": "ssh://borg@10.42.0.5/./hersonissos",
            "label": "control",
        }
    ]
    content = _evaluate(
        _task("Pin control's host key")["ansible.builtin.copy"]["content"], variables
    )
    assert content == CONTROL_KNOWN + "\n"
    removal = _task("Remove the off-site configuration")
    assert _evaluate("{{ " + removal["when"] + " }}", variables) is True


@pytest.mark.parametrize("target", [0, 1])
def test_with_a_remote_two_files_each_its_own_repository(target: int) -> None:
    variables = _tenant(REMOTE_VARS)
    targets = _evaluate("{{ backup_targets }}", variables)
    assert [t["file"] for t in targets] == [
        "/etc/borgmatic/config.yaml",
        "/etc/borgmatic/offsite.yaml",
    ]
    chosen = targets[target]
    text = render("backup", "etc/borgmatic/config.yaml.j2", variables, backup_target=chosen)
    config = yaml.safe_load(text)
    assert config["repositories"] == [{"path": chosen["repository"], "label": chosen["label"]}]
    # the same data, the same passphrase and archive names, the same pinned-key ssh
    assert config["source_directories"] == [
        "/etc/kallikratis",
        "/var/lib/wordpress/wp-content/uploads",
        "/var/lib/kolibri",
    ]
    assert config["archive_name_format"] == "hersonissos-{now:%Y-%m-%dT%H:%M:%S}"
    assert config["encryption_passcommand"] == "cat /etc/borgmatic/passphrase"
    ssh = config["ssh_command"].split()
    assert "StrictHostKeyChecking=yes" in ssh
    assert "UserKnownHostsFile=/etc/borgmatic/known_hosts" in ssh
    assert "keep_daily" not in config  # never pruned from the VM


def test_with_a_remote_its_host_key_is_pinned_next_to_controls() -> None:
    variables = _tenant(REMOTE_VARS)
    content = _evaluate(
        _task("Pin control's host key")["ansible.builtin.copy"]["content"], variables
    )
    assert content == f"{CONTROL_KNOWN}\n[offsite.example.org]:2222 {ED25519}\n"
    removal = _task("Remove the off-site configuration")
    assert _evaluate("{{ " + removal["when"] + " }}", variables) is False


@pytest.mark.parametrize(
    ("change", "ok"),
    [
        ({}, True),
        ({"repository": "ssh://kk@offsite.example.org:2222/srv/kallikratis/minoa-pediada"}, False),
        ({"known_hosts": []}, False),
        ({"known_hosts": ["[offsite.example.org]:2222 ssh-ed25519 AAAA\nevil"]}, False),
    ],
)
def test_the_roles_assert_checks_the_remote(change: dict[str, Any], ok: bool) -> None:
    task = _task("Check the off-site copy")
    variables = _tenant(REMOTE_VARS | change)
    results = [
        _evaluate("{{ " + cond + " }}", variables)
        for cond in task["ansible.builtin.assert"]["that"]
    ]
    assert all(results) is ok


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("ssh://kk@[2001:db8::5]/srv/k", "ssh://kk@[2001:db8::5]:22/srv/k/hersonissos"),
        ("ssh://kk@10.1.2.3:2200/srv/k", "ssh://kk@10.1.2.3:2200/srv/k/hersonissos"),
        ("ssh://kk@offsite.example.org/k", "ssh://kk@offsite.example.org:22/k/hersonissos"),
    ],
)
def test_what_the_inventory_accepts_the_roles_assert_accepts(url: str, repository: str) -> None:
    remote, problems = backupfields.backup_remote({"url": url, "host_key": ED25519})
    assert remote is not None and problems == []
    assert remote.repository("hersonissos") == repository
    conditions = _task("Check the off-site copy")["ansible.builtin.assert"]["that"]
    variables = _tenant(
        {
            "label": stackvars.REMOTE_LABEL,
            "repository": remote.repository("hersonissos"),
            "known_hosts": [remote.known_hosts_line()],
        }
    )
    assert all(_evaluate("{{ " + c + " }}", variables) for c in conditions)


def test_a_municipalitys_firewall_lets_it_reach_the_remote_and_opens_nothing_new() -> None:
    """The VM's nftables filter inbound only: the remote's HOST:PORT is reached through the
    output chain's accept policy, and a backup_remote adds no inbound rule."""
    base = {
        "ansible_managed": "x",
        "kallikratis_mgmt_networks": ["10.42.0.1/32", "10.42.0.5/32"],
        "kallikratis_apt_sources": [],
    }
    plain = render("base", "etc/nftables.conf.j2", base)
    with_remote = render(
        "base", "etc/nftables.conf.j2", base | {"kallikratis_backup_store": _store(REMOTE_VARS)}
    )
    assert plain == with_remote
    output = plain[plain.index("chain output") :]
    assert output.split("}")[0].split("{")[1].split() == [
        "type",
        "filter",
        "hook",
        "output",
        "priority",
        "filter;",
        "policy",
        "accept;",
    ]

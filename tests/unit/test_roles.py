"""Role conventions the code relies on: one nginx reload, shared VM paths defined once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kallikratis import guest, model, stackvars

ROLES = Path(__file__).resolve().parents[2] / "roles"
SHARED = {
    stackvars.VM_NGINX_SNIPPET_DIR: "kallikratis_nginx_snippet_dir",
    stackvars.VM_MAINTENANCE_FLAG: "kallikratis_maintenance_flag",
    stackvars.VM_WHEELHOUSE: "kallikratis_wheelhouse",
}


#: roles of central VMs, which do not run the municipalities' web role
ROLES_WITHOUT_WEB = {"monitoring", "hub"}


def _yaml_files() -> list[Path]:
    return sorted(p for p in ROLES.rglob("*.yml") if "templates" not in p.parts)


def _tasks(role: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in sorted((role / "tasks").glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            out += [task, *task.get("block", [])]
    return out


def test_shared_vm_paths_come_from_the_vars_plugin(test_fleet: model.Fleet, tmp_path: Path) -> None:
    for path in _yaml_files():
        text = path.read_text()
        for literal, var in SHARED.items():
            assert literal not in text, f"{path}: use {{{{ {var} }}}} instead of {literal}"
    got = stackvars.municipality_vars(test_fleet, test_fleet.municipalities[0], tmp_path)
    assert {got[var] for var in SHARED.values()} == set(SHARED)
    assert guest.MAINTENANCE_FLAG == stackvars.VM_MAINTENANCE_FLAG


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if p.is_dir()))
def test_one_nginx_reload_handler(role: str) -> None:
    """Only web reloads nginx (after nginx -t); a role notifying it depends on web."""
    path = ROLES / role
    notifies = set()
    for task in _tasks(path):
        notify = task.get("notify", [])
        notifies |= {notify} if isinstance(notify, str) else set(notify)  # type: ignore[arg-type]
    if role == "web":
        handlers = yaml.safe_load((path / "handlers" / "main.yml").read_text())
        reload = [h for h in handlers if h.get("listen") == "Reload nginx"]
        assert [next(k for k in h if "." in k) for h in reload] == [
            "ansible.builtin.command",
            "ansible.builtin.systemd_service",
        ]
        assert "nginx -t" in reload[0]["ansible.builtin.command"]
        return
    if role in ROLES_WITHOUT_WEB:
        # central VMs (control's dashboard, the hub): no web role there, their own nginx -t + reload
        handlers = yaml.safe_load((path / "handlers" / "main.yml").read_text())
        mine = [h for h in handlers if h.get("listen") == f"{role.capitalize()} reload nginx"]
        assert [next(k for k in h if "." in k) for h in mine] == [
            "ansible.builtin.command",
            "ansible.builtin.systemd_service",
        ]
        assert "nginx -t" in mine[0]["ansible.builtin.command"]
        assert "Reload nginx" not in notifies
        return
    handlers = (path / "handlers" / "main.yml").read_text() if (path / "handlers").is_dir() else ""
    assert "name: nginx" not in handlers, f"{role} has its own nginx handler"
    if "Reload nginx" in notifies:
        meta = yaml.safe_load((path / "meta" / "main.yml").read_text())
        assert {"role": "web"} in meta["dependencies"]


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if p.is_dir()))
def test_argument_specs_do_not_copy_the_defaults(role: str) -> None:
    """Defaults live in defaults/main.yml only; the spec documents and types every one."""
    spec = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    assert not [name for name, opt in options.items() if "default" in opt]
    assert set(defaults) <= set(options)
    inputs = set(options) - set(defaults)
    assert all(n.startswith(("kallikratis_", "vault_")) for n in inputs), inputs


def _secret_vars() -> set[str]:
    """Every role variable that carries a secret: named so, or defaulting to a vault value."""
    names = {"vault_portal_admin_password", "vault_portal_db_password"}
    names |= {"vault_education_admin_password", "vault_web_maintenance_bypass"}
    for defaults in ROLES.glob("*/defaults/main.yml"):
        for name, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if "vault_" in str(value) or any(w in name for w in ("password", "token", "secret")):
                names.add(name)
    return names


_PROCESS_MODULES = ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.raw")


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if p.is_dir()))
def test_no_secret_on_a_command_line(role: str) -> None:
    """A process's argv is world-readable in the VM (`ps`): secrets go in on stdin, under
    no_log. `environment:` counts as a command line too: plain ssh puts it on the remote one."""
    secret = _secret_vars()
    assert "education_admin_password" in secret
    for task in _tasks(ROLES / role):
        module = next((m for m in _PROCESS_MODULES if m in task), None)
        if module is None:
            continue
        args = task[module]
        exposed = (
            {k: v for k, v in args.items() if k != "stdin"} if isinstance(args, dict) else args
        )
        text = yaml.safe_dump([exposed, task.get("environment", {})])
        local_vars = task.get("vars", {}) or {}
        # a task variable built from a secret counts as the secret
        tainted = secret | {n for n, v in local_vars.items() if any(s in str(v) for s in secret)}
        leaked = sorted(name for name in tainted if name in text)
        assert not leaked, f"{role}: {task.get('name')}: {leaked} on the command line"
        uses_secret = any(name in yaml.safe_dump(task) for name in tainted)
        if uses_secret:
            assert task.get("no_log") is True, f"{role}: {task.get('name')}: no_log: true"


def test_kolibri_password_goes_in_on_stdin() -> None:
    """The provisioning task, rendered: the password is in stdin's JSON, not in the argv."""
    import ast
    import json

    from jinja2 import Environment

    task = next(
        t for t in _tasks(ROLES / "education") if "Provision the Kolibri" in str(t.get("name"))
    )
    env = Environment()
    env.filters["to_json"] = json.dumps
    env.filters["combine"] = lambda a, b: {**a, **b}
    values = {
        "education_user": "kolibri",
        "education_venv": "/opt/venv",
        "education_home": "/var/lib/kolibri",
        "education_facility": "Δήμος",
        "education_preset": "formal",
        "education_language": "el",
        "education_admin_user": "admin",
        "education_admin_password": "S3cr3t-Pa55word",
    }
    opts = env.from_string(task["vars"]["education_provision_options"]).render(**values)
    values["education_provision_options"] = ast.literal_eval(opts)  # Jinja renders a dict repr
    args = task["ansible.builtin.command"]
    argv = [env.from_string(a).render(**values) for a in args["argv"]]
    stdin = env.from_string(args["stdin"]).render(**values)
    assert all("S3cr3t-Pa55word" not in a for a in argv)
    assert json.loads(stdin)["superuserpassword"] == "S3cr3t-Pa55word"
    assert task["no_log"] is True


#: ansible_* names that are not gathered facts (magic, connection and loop variables)
NOT_FACTS = {"ansible_managed", "ansible_version", "ansible_loop", "ansible_failed_result"}


def test_no_role_reads_a_gathered_fact() -> None:
    """site.yml gathers no facts (they cost ~15 s of every deploy under TCG): a role or
    template that reads one (ansible_facts, ansible_distribution, ...) must not slip in."""
    import re

    plays = yaml.safe_load((ROLES.parent / "playbooks" / "site.yml").read_text())
    assert [play.get("gather_facts") for play in plays] == [False] * len(plays)
    files = [p for p in ROLES.rglob("*") if p.is_file() and p.suffix in (".yml", ".j2")]
    files += list((ROLES.parent / "playbooks").glob("*.yml"))
    used = {
        (name, str(path.relative_to(ROLES.parent)))
        for path in files
        for name in re.findall(r"\bansible_[a-z0-9_]+", path.read_text())
        if name not in NOT_FACTS
    }
    assert not used, sorted(used)


FAST_ENABLE = {"SYSTEMCTL_INSTALL_CLIENT_SIDE": "1", "SYSTEMCTL_SKIP_SYSV": "1"}


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if p.is_dir()))
def test_enabling_a_unit_costs_no_reload_and_a_mask_keeps_its_reload(role: str) -> None:
    """README "Deploy time": a task that only enables or disables units does it client-side
    without the SysV sync (8.0 s -> 0.33 s per unit under TCG); a task that masks or unmasks
    must not, since Ansible reads a mask back from systemd's loaded state, which only a reload
    updates (client-side there would report "changed" on every run)."""
    seen = 0
    for task in _tasks(ROLES / role):
        args = task.get("ansible.builtin.systemd_service")
        if not isinstance(args, dict):
            continue
        env = task.get("environment") or {}
        assert isinstance(env, dict), (role, task.get("name"))
        if "masked" in args:
            assert "SYSTEMCTL_INSTALL_CLIENT_SIDE" not in env, (role, task["name"])
        elif "enabled" in args:
            assert env == FAST_ENABLE, (role, task["name"])
            seen += 1
    if role in {"base", "web", "portal", "metrics", "monitoring", "hub"}:
        assert seen, f"{role}: no enable task found (the role's layout changed?)"


def test_the_plays_skip_the_sysv_sync() -> None:
    plays = yaml.safe_load((ROLES.parent / "playbooks" / "site.yml").read_text())
    assert [p["environment"] for p in plays] == [{"SYSTEMCTL_SKIP_SYSV": "1"}] * len(plays)

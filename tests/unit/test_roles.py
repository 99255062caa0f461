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

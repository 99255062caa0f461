"""`deploy --only ROLE`: a partial deploy through ansible's tags. site.yml tags every role entry
with its own name; the option takes only those names; ansible itself, given the tags, plans the
named roles' tasks and no other role's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner
from kallikratis import ansible, paths, siterun
from kallikratis.cli import main_group
from support import InventoryCopy

SITE = paths.PROJECT_ROOT / "playbooks" / "site.yml"


def test_every_role_entry_of_site_yml_is_tagged_with_its_own_name() -> None:
    for play in yaml.safe_load(SITE.read_text()):
        for entry in play["roles"]:
            assert entry.get("tags") == [entry["role"]], entry


def test_site_roles_are_the_playbooks_roles_in_order_each_once() -> None:
    assert siterun.site_roles() == [
        "base",
        "web",
        "portal",
        "opendata",
        "education",
        "metrics",
        "backup",
        "monitoring",
        "backupstore",
        "hub",
    ]


def test_the_runner_gets_the_tags_and_none_without_only(tmp_path: Path) -> None:
    def args(*only: str) -> dict[str, object]:
        return ansible.runner_arguments(
            "site.yml", Path("inv"), tmp_path, ["hersonissos"], {}, False, None, only
        )

    assert args("backup", "metrics")["tags"] == "backup,metrics"
    assert args()["tags"] is None


def test_ansible_plans_the_named_roles_tasks_only(inv: InventoryCopy, vault_password: Path) -> None:
    """ansible-playbook --list-tasks with the tags `deploy --only backup` passes: besides the
    argument-spec checks (tagged `always` by ansible), backup's tasks and nothing else, the
    tasks it includes dynamically among them."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inv.root),
            str(SITE),
            "--list-tasks",
            "--tags",
            "backup",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths.PROJECT_ROOT,
        env={**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": str(vault_password)},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tasks = [line.strip() for line in done.stdout.splitlines() if "TAGS: [" in line]
    planned = [t for t in tasks if "Validating arguments" not in t and not t.startswith("play #")]
    assert planned and all(t.startswith("backup : ") for t in planned), planned
    assert any("Configure borgmatic" in t for t in planned), planned


def test_an_unknown_role_is_refused_before_anything_runs(
    inv: InventoryCopy, vault_password: Path, state_dir: Path, monkeypatch
) -> None:
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(state_dir))
    inv.use_test_driver()
    result = CliRunner().invoke(
        main_group, ["-i", str(inv.root), "deploy", "hersonissos", "--only", "backup,portl"]
    )
    assert result.exit_code == 2, result.output
    assert "portl is not a role of playbooks/site.yml" in result.output
    assert "(its roles: base, web, portal, opendata" in result.output.replace("\n", " ")
    assert not (state_dir / "journal.sqlite").exists(), "a refused run is not journaled"
    assert not (state_dir / "runs").exists(), "nothing ran"

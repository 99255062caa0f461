"""The application stack on real VMs: onboard, deploy, verify, idempotence, a real browser,
module removal, validation before change, and an unreachable VM. Runs after test_provision
(which leaves the e2e fleet destroyed), in this order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest
import yaml

from tests.e2e.conftest import FLEET, Fleet

pytestmark = pytest.mark.e2e
SLUGS = ["archanes-asterousia", "minoa-pediada", "hersonissos"]
ARTIFACTS = Path(os.environ.get("KALLIKRATIS_TEST_ARTIFACTS", "/tmp/kallikratis-test-artifacts"))


def hosts_yml(fleet: Fleet) -> Path:
    return fleet.inventory / "hosts.yml"


def set_host(fleet: Fleet, slug: str, **values: object) -> None:
    data = yaml.safe_load(hosts_yml(fleet).read_text())
    entry = data["all"]["children"]["municipalities"]["hosts"][slug]
    for key, value in values.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    hosts_yml(fleet).write_text(yaml.safe_dump(data, allow_unicode=True))


def deploy(fleet: Fleet, *args: str, check: bool = True) -> dict:
    done = fleet.kk("deploy", *args, "--json", check=check, timeout=1800)
    return json.loads(done.stdout)


def test_onboard_a_new_municipality(fleet: Fleet) -> None:
    done = fleet.kk("onboard", "hersonissos", timeout=1800)
    assert "hersonissos is online" in done.stdout


def test_deploy_all(fleet: Fleet) -> None:
    fleet.kk("up", "--all")
    out = deploy(fleet, "--all")
    for slug in SLUGS:
        assert out["hosts"][slug]["failed"] == 0 and out["hosts"][slug]["unreachable"] == 0
    assert Path(out["artifacts"]).is_dir()


def test_verify_passes_everywhere(fleet: Fleet) -> None:
    out = fleet.kk_json("verify")
    failed = [c for c in out["checks"] if not c["passed"]]
    assert not failed, failed
    assert {c["slug"] for c in out["checks"]} == set(SLUGS)


def test_second_deploy_changes_nothing(fleet: Fleet) -> None:
    out = deploy(fleet, "--all")
    assert {slug: h["changed"] for slug, h in out["hosts"].items()} == dict.fromkeys(SLUGS, 0)


def test_status_json_has_domain_and_modules(fleet: Fleet) -> None:
    rows = {r["slug"]: r for r in fleet.kk_json("status")["municipalities"]}
    assert rows["hersonissos"]["modules"] == ["portal", "opendata", "education"]
    assert rows["minoa-pediada"]["domain"] == "minoa-pediada.e2e.kallikratis.test"


def _browser_profile(tmp_path: Path, ca_file: Path) -> dict[str, str]:
    """A throw-away HOME whose NSS database trusts only our fleet CA (as a CA, for TLS)."""
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(
        [
            "certutil",
            "-A",
            "-d",
            f"sql:{nssdb}",
            "-n",
            "kallikratis-fleet-ca",
            "-t",
            "C,,",
            "-i",
            str(ca_file),
        ],
        check=True,
    )
    return dict(os.environ, HOME=str(home))


@pytest.mark.parametrize("slug", SLUGS)
def test_a_real_browser_shows_the_portal(fleet: Fleet, tmp_path: Path, slug: str) -> None:
    spec = json.loads((fleet.state / "fleets" / FLEET / "verify-spec.json").read_text())[slug]
    env = _browser_profile(tmp_path, Path(spec["ca_file"]))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"portal-{slug}.png"
    shot.unlink(missing_ok=True)
    common = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--host-resolver-rules=MAP {spec['domain']} {spec['ip']}",
    ]
    url = f"https://{spec['domain']}/"
    dom = subprocess.run(
        [*common, "--dump-dom", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert spec["display_name"] in dom.stdout, dom.stderr[-2000:]
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,900", url],
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 10_000


def test_removing_education_removes_kolibri(fleet: Fleet) -> None:
    set_host(fleet, "hersonissos", modules=["portal", "opendata"])
    out = deploy(fleet, "hersonissos")
    assert out["hosts"]["hersonissos"]["failed"] == 0
    gone = fleet.kk("ssh", "hersonissos", "--", "systemctl", "is-active", "kolibri", check=False)
    assert gone.stdout.strip() != "active"
    out = fleet.kk_json("verify", "hersonissos")
    assert all(c["passed"] for c in out["checks"]), out["checks"]


@pytest.mark.parametrize(
    "change",
    [
        {"modules": ["portal", "wiki"]},
        {"datasets": ["council_decisions", "parking_fines"]},
        {"branding": {"colour": "blue"}},
    ],
)
def test_validate_rejects_bad_stack_input_before_any_change(
    fleet: Fleet, conn: libvirt.virConnect, change: dict
) -> None:
    backup = hosts_yml(fleet).read_text()
    runs_before = set((fleet.state / "runs").iterdir())
    xml_before = conn.lookupByName(f"{FLEET}-minoa-pediada").XMLDesc(0)
    try:
        set_host(fleet, "minoa-pediada", **change)
        for cmd in (["validate"], ["deploy", "--all"], ["up", "--all"]):
            done = fleet.kk(*cmd, check=False)
            assert done.returncode == 2, (cmd, done.stdout, done.stderr)
            assert "minoa-pediada" in done.stderr and "hosts.yml" in done.stderr
    finally:
        hosts_yml(fleet).write_text(backup)
    assert set((fleet.state / "runs").iterdir()) == runs_before  # no playbook ran
    assert conn.lookupByName(f"{FLEET}-minoa-pediada").XMLDesc(0) == xml_before


def test_a_shut_off_vm_is_unreachable_while_the_others_deploy(
    fleet: Fleet, conn: libvirt.virConnect
) -> None:
    conn.lookupByName(f"{FLEET}-minoa-pediada").destroy()
    try:
        done = fleet.kk("deploy", "--all", "--json", check=False, timeout=1800)
        assert done.returncode == 5
        hosts = json.loads(done.stdout)["hosts"]
        assert hosts["minoa-pediada"]["unreachable"] > 0
        for slug in ("archanes-asterousia", "hersonissos"):
            assert hosts[slug]["failed"] == 0 and hosts[slug]["unreachable"] == 0
    finally:
        fleet.kk("up", "--all")


def test_plain_ansible_playbook_reads_the_same_inventory(fleet: Fleet) -> None:
    root = Path(__file__).resolve().parents[2]
    env = dict(fleet.env, ANSIBLE_CONFIG=str(root / "ansible.cfg"))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(fleet.inventory),
            str(root / "playbooks" / "site.yml"),
            "--limit",
            "archanes-asterousia",
            "--check",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=root,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "archanes-asterousia" in done.stdout and "failed=0" in done.stdout

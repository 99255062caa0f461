"""The application stack on real VMs: deploy, verify, idempotence, a real browser, module
removal, validation before change, an unreachable VM, a changed host key refused on every SSH
path, plain ansible-playbook. On the shared deployed fleet (``fresh``: reverted to the base
snapshot before and after this module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from tests.e2e.conftest import FLEET, SLUGS, VMS, Deployed, Fleet, close_ssh_masters
from tests.helpers.chromium import browser_profile, headless

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(os.environ.get("KALLIKRATIS_TEST_ARTIFACTS", "/tmp/kallikratis-test-artifacts"))


def deploy(fleet: Fleet, *args: str, check: bool = True, relative: bool = False) -> dict:
    done = fleet.kk("deploy", *args, "--json", check=check, timeout=1800, relative=relative)
    return json.loads(done.stdout)


def test_first_deploy_of_all(fresh: Deployed) -> None:
    out = fresh.deploy  # the session's first `deploy --all`, which the base snapshot holds
    for slug in VMS:
        assert out["hosts"][slug]["failed"] == 0 and out["hosts"][slug]["unreachable"] == 0
        assert out["hosts"][slug]["changed"] > 0
    assert Path(out["artifacts"]).is_dir()


def test_verify_passes_everywhere(fresh: Deployed) -> None:
    out = fresh.fleet.kk_json("verify")
    failed = [c for c in out["checks"] if not c["passed"]]
    assert not failed, failed
    assert {c["slug"] for c in out["checks"]} == set(VMS)  # control: base + monitoring


def test_status_json_has_domain_and_modules(fresh: Deployed) -> None:
    rows = {r["slug"]: r for r in fresh.fleet.kk_json("status")["municipalities"]}
    assert rows["hersonissos"]["modules"] == ["portal", "opendata", "education"]
    assert rows["archanes-asterousia"]["domain"] == "archanes-asterousia.e2e.kallikratis.test"


@pytest.mark.parametrize("slug", SLUGS)
def test_a_real_browser_shows_the_portal(fresh: Deployed, tmp_path: Path, slug: str) -> None:
    fleet = fresh.fleet
    ip, domain = fleet.sites()[slug]
    display_name = fleet.municipalities()[slug]["display_name"]
    env = browser_profile(tmp_path, fleet.ca_file)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"portal-{slug}.png"
    shot.unlink(missing_ok=True)
    common = headless(tmp_path, domain, ip)
    url = f"https://{domain}/"
    dom = subprocess.run(
        [*common, "--dump-dom", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert display_name in dom.stdout, dom.stderr[-2000:]
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,900", url],
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 10_000


def _plain_ansible_check(fleet: Fleet, slug: str) -> subprocess.CompletedProcess:
    """ansible-playbook itself, with the mitogen strategy a sysadmin can enable the same way
    (stock linear SSH costs ~7 min here under TCG; bench/deploy compares the two)."""
    import ansible_mitogen  # type: ignore[import-not-found]

    root = Path(__file__).resolve().parents[2]
    env = dict(
        fleet.env,
        ANSIBLE_CONFIG=str(root / "ansible.cfg"),
        ANSIBLE_STRATEGY_PLUGINS=str(Path(ansible_mitogen.__file__).parent / "plugins/strategy"),
        ANSIBLE_STRATEGY="mitogen_linear",
    )
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(fleet.inventory),
            str(root / "playbooks" / "site.yml"),
            "--limit",
            slug,
            "--check",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=root,
        check=False,
    )


@pytest.mark.extended
def test_plain_ansible_playbook_reads_the_same_inventory(fresh: Deployed) -> None:
    """Plain ansible-playbook (our vars plugin, no kallikratis process) in check mode on a
    deployed VM: it connects with the pinned settings and would change nothing."""
    done = _plain_ansible_check(fresh.fleet, "archanes-asterousia")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    recap = done.stdout[done.stdout.rfind("PLAY RECAP") :]
    assert "archanes-asterousia" in recap and "failed=0" in recap, recap
    assert "changed=0" in recap, done.stdout[-5000:]


def test_second_deploy_changes_nothing_and_a_shut_off_vm_is_unreachable(
    fresh: Deployed, conn: libvirt.virConnect
) -> None:
    """The idempotence gate (0 changed on the VM with every module) and a VM that is shut off
    reported unreachable while the other deploys, in one run."""
    conn.lookupByName(f"{FLEET}-archanes-asterousia").destroy()
    try:
        out = deploy(fresh.fleet, "--all", check=False)
        hosts = out["hosts"]
        assert hosts["archanes-asterousia"]["unreachable"] > 0, hosts
        for slug in ("hersonissos", "control"):  # control: the monitoring's idempotence gate
            got = hosts[slug]
            assert (got["failed"], got["unreachable"], got["changed"]) == (0, 0, 0), (slug, got)
    finally:
        fresh.restore()


@pytest.mark.parametrize(
    "change",
    [
        {"modules": ["portal", "wiki"]},
        {"datasets": ["council_decisions", "parking_fines"]},
        {"branding": {"colour": "blue"}},
    ],
)
def test_validate_rejects_bad_stack_input_before_any_change(
    fresh: Deployed, conn: libvirt.virConnect, change: dict
) -> None:
    fleet, slug = fresh.fleet, "archanes-asterousia"
    backup = fleet.hosts_yml.read_text()
    runs_before = set((fleet.state / "runs").iterdir())
    xml_before = conn.lookupByName(f"{FLEET}-{slug}").XMLDesc(0)
    try:
        fleet.set_host(slug, **change)
        for cmd in (["validate"], ["deploy", "--all"], ["up", "--all"]):
            done = fleet.kk(*cmd, check=False)
            assert done.returncode == 2, (cmd, done.stdout, done.stderr)
            assert slug in done.stderr and "hosts.yml" in done.stderr
    finally:
        fleet.hosts_yml.write_text(backup)
    assert set((fleet.state / "runs").iterdir()) == runs_before  # no playbook ran
    assert conn.lookupByName(f"{FLEET}-{slug}").XMLDesc(0) == xml_before


@pytest.mark.extended
def test_removing_education_removes_kolibri(fresh: Deployed) -> None:
    fleet = fresh.fleet
    try:
        fleet.set_host("hersonissos", modules=["portal", "opendata"])
        out = deploy(fleet, "hersonissos", relative=True)  # `-i e2e`, a relative path
        assert out["hosts"]["hersonissos"]["failed"] == 0
        gone = fleet.ssh("hersonissos", "systemctl is-active kolibri || true")
        assert gone.strip() != "active"
        out = fleet.kk_json("verify", "hersonissos")
        assert all(c["passed"] for c in out["checks"]), out["checks"]
    finally:
        fresh.restore()


def test_a_changed_host_key_is_refused_on_every_ssh_path(fresh: Deployed) -> None:
    """The VM presents another host key (as a man in the middle would): `kallikratis ssh`,
    `verify` (testinfra's ssh_config) and `deploy` (Ansible's connection) all refuse it."""
    fleet, slug = fresh.fleet, "archanes-asterousia"
    key = "/etc/ssh/ssh_host_ed25519_key"
    try:
        fleet.ssh(
            slug,
            f"sudo rm -f {key} {key}.pub && sudo ssh-keygen -q -t ed25519 -N '' -f {key}"
            " && sudo systemctl restart ssh",
        )
        close_ssh_masters(fleet.state)  # a persisted master would skip the new handshake
        done = fleet.kk("ssh", slug, "--", "true", check=False, timeout=120)
        assert done.returncode != 0, done.stdout
        assert "host key" in done.stderr.lower(), done.stderr

        done = fleet.kk("verify", slug, "--json", check=False, timeout=900)
        assert done.returncode != 0, done.stdout[-3000:]
        assert "remote host identification has changed" in done.stdout.lower(), done.stdout[-3000:]

        done = fleet.kk("deploy", slug, "--json", check=False, timeout=900)
        assert done.returncode == 5, done.stdout[-3000:] + done.stderr[-3000:]
        host = json.loads(done.stdout)["hosts"][slug]
        assert host["unreachable"] > 0 and host["changed"] == 0, host
        assert "host key" in (done.stdout + done.stderr).lower(), done.stdout[-3000:]
    finally:
        fresh.restore()

"""Backups (issue 11): borgmatic on a municipality's VM, the backup store on control.

Every VM: a municipality of a fleet with a control VM has borgmatic configured (root-only
files, control's host key pinned, Debian's own timer masked); control serves each
municipality's repository append-only, for its key alone. No check is ever skipped: where a
part does not apply, the check asserts its absence. control also checks its repositories
weekly and expires destroyed municipalities' ones (kallikratis-backupstore and its timers).
"""

from __future__ import annotations

from typing import Any

from helpers_data import load_spec

ROOT_ONLY = (
    "/etc/borgmatic/config.yaml",
    "/etc/borgmatic/passphrase",
    "/etc/borgmatic/id_ed25519",
)
AUTHORIZED_KEYS = "/etc/ssh/kallikratis-backup.authorized_keys"  # roles/backupstore
STORE = "/srv/backups"
TOOL = "/usr/local/sbin/kallikratis-backupstore"  # roles/backupstore
FORCED = 'command="borg serve --append-only --restrict-to-repository /srv/backups/'


def test_borgmatic_files_are_root_only_where_there_is_a_store(host: Any) -> None:
    m = load_spec(host)
    configured = bool(m.get("backup_store"))
    with host.sudo():  # /etc/borgmatic is root's alone: the check reads it as root
        for path in ROOT_ONLY:
            f = host.file(path)
            assert f.exists is configured, f"{path}: exists={f.exists}, store={configured}"
            if configured:
                assert (f.user, f.group, f.mode) == ("root", "root", 0o600), path
        if configured:
            known = host.file("/etc/borgmatic/known_hosts").content_string.split()
            config = host.file("/etc/borgmatic/config.yaml").content_string
    if configured:
        assert len(known) >= 3 and known[1].startswith("ssh-"), "control's host key not pinned"
        assert "StrictHostKeyChecking=yes" in config and "StrictHostKeyChecking=no" not in config


def test_debians_borgmatic_timer_never_runs(host: Any) -> None:
    # it would prune from the VM (append-only) and run every action unasked: the image masks it
    timer = host.service("borgmatic.timer")
    assert timer.is_masked, host.run("systemctl is-enabled borgmatic.timer").stdout
    assert not timer.is_running


def test_control_serves_each_repository_append_only_to_its_key(host: Any) -> None:
    m = load_spec(host)
    if "control" not in (m.get("central_roles") or []):
        assert not host.file(AUTHORIZED_KEYS).exists
        return
    keys = host.file(AUTHORIZED_KEYS)
    assert (keys.user, keys.mode) == ("root", 0o644)
    lines = [line for line in keys.content_string.splitlines() if line and not line.startswith("#")]
    assert all(line.startswith(FORCED) and ",restrict," in line for line in lines), lines
    store = host.file(STORE)
    assert store.is_directory and (store.user, store.mode) == ("borg", 0o700)
    assert host.user("borg").home == STORE


def test_the_repositories_are_on_controls_own_volume(host: Any) -> None:
    m = load_spec(host)
    label = m.get("backup_volume_label") or ""
    mounted = host.run(f"findmnt --noheadings --output LABEL,FSTYPE --mountpoint {STORE}")
    if not label:  # no volume declared: nothing is mounted there
        assert mounted.rc != 0, mounted.stdout
        return
    assert mounted.rc == 0, f"{STORE} is not a mount point: the repositories are on the root disk"
    assert mounted.stdout.split() == [label, "ext4"], mounted.stdout
    # its own file system: a full store never fills control's root disk
    assert host.mount_point(STORE).device != host.mount_point("/").device


def test_control_checks_its_repositories_weekly_and_expires_destroyed_ones(host: Any) -> None:
    m = load_spec(host)
    if "control" not in (m.get("central_roles") or []):
        assert not host.file(TOOL).exists
        return
    tool = host.file(TOOL)
    assert (tool.user, tool.mode) == ("root", 0o755)
    for timer in ("kallikratis-backup-check.timer", "kallikratis-backup-expire.timer"):
        assert host.service(timer).is_enabled, timer
        assert host.service(timer).is_running, timer
    # the tool answers (no repository needed): what `kallikratis backups` reads
    with host.sudo():  # root's tool: the repositories and its records are not the admin's
        out = host.check_output(f"{TOOL} status verify-probe")
    assert '"slug": "verify-probe"' in out and '"check": null' in out

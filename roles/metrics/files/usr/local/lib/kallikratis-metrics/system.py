"""Collectors of the VM's own state: pending updates, reboot, maintenance mode, versions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from textfile import Sample

FAMILIES = {
    "kallikratis_upgrades_pending": ("gauge", "Packages with a pending upgrade."),
    "kallikratis_security_upgrades_pending": ("gauge", "Packages with a pending security upgrade."),
    "kallikratis_security_upgrades_pending_since_timestamp_seconds": (
        "gauge",
        "When pending security upgrades were first seen (0: none pending).",
    ),
    "kallikratis_reboot_required_since_timestamp_seconds": (
        "gauge",
        "Since when a reboot is required (0: none).",
    ),
    "kallikratis_maintenance_mode": ("gauge", "1 while the maintenance flag file exists."),
    "kallikratis_maintenance_since_timestamp_seconds": (
        "gauge",
        "Modification time of the maintenance flag file (0: maintenance off).",
    ),
    "kallikratis_version_info": ("gauge", "Installed version of a platform component."),
}

#: `apt-get --simulate` lines: Inst NAME [OLD] (NEW ORIGIN-LIST [ARCH])
_INST = re.compile(r"^Inst (\S+)(?: \[[^\]]*\])? \((\S+) ([^\[]*?)(?: \[[^\]]*\])?\)")


def parse_simulated_upgrade(text: str) -> tuple[int, int]:
    """(all pending upgrades, security ones) from `apt-get --simulate dist-upgrade` output."""
    total = security = 0
    for line in text.splitlines():
        match = _INST.match(line)
        if not match:
            continue
        total += 1
        origins = match.group(3)
        if re.search(r"(?i)security", origins):
            security += 1
    return total, security


def simulate_upgrade() -> str:
    """apt's own view of what a dist-upgrade would install (no lock, no change)."""
    env = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(
        # no cache files: the unit's file system is read-only (ProtectSystem=strict)
        [
            "apt-get",
            "--simulate",
            "--quiet",
            "--quiet",
            "-o",
            "Dir::Cache::pkgcache=",
            "-o",
            "Dir::Cache::srcpkgcache=",
            "dist-upgrade",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout


def _mtime(path: Path) -> float:
    try:
        return float(int(path.stat().st_mtime))
    except FileNotFoundError:
        return 0.0


def updates(text: str, state: dict, now: float, reboot_flag: Path) -> list[Sample]:
    """Pending upgrades; `state["security_since"]` keeps when security ones were first seen."""
    total, security = parse_simulated_upgrade(text)
    if security:
        state["security_since"] = state.get("security_since") or int(now)
    else:
        state["security_since"] = 0
    return [
        ("kallikratis_upgrades_pending", {}, total),
        ("kallikratis_security_upgrades_pending", {}, security),
        (
            "kallikratis_security_upgrades_pending_since_timestamp_seconds",
            {},
            state["security_since"],
        ),
        ("kallikratis_reboot_required_since_timestamp_seconds", {}, _mtime(reboot_flag)),
    ]


def maintenance(flag: Path) -> list[Sample]:
    since = _mtime(flag)
    on = 1 if flag.exists() else 0
    return [
        ("kallikratis_maintenance_mode", {}, on),
        ("kallikratis_maintenance_since_timestamp_seconds", {}, since),
    ]


def wordpress_version(version_php: Path) -> str | None:
    try:
        text = version_php.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    match = re.search(r"\$wp_version\s*=\s*'([^']+)'", text)
    return match.group(1) if match else None


def dist_version(venv: Path, project: str) -> str | None:
    """The version of PROJECT installed in VENV, from its .dist-info directory name."""
    wanted = project.lower().replace("-", "_")
    for info in sorted(venv.glob("lib/python3*/site-packages/*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        if name.lower().replace("-", "_") == wanted and version:
            return version
    return None


def versions(cfg: dict) -> list[Sample]:
    """kallikratis_version_info of the image and of every module that is on."""
    modules = set(cfg["modules"])
    found: dict[str, str | None] = {}
    image = Path(cfg["image_version_file"])
    lines = image.read_text(encoding="utf-8").split() if image.is_file() else []
    found["image"] = lines[0] if lines else None
    if "portal" in modules:
        found["wordpress"] = wordpress_version(Path(cfg["wordpress_version_php"]))
    if "opendata" in modules:
        found["datasette"] = dist_version(Path(cfg["opendata_venv"]), "datasette")
    if "education" in modules:
        found["kolibri"] = dist_version(Path(cfg["education_venv"]), "kolibri")
    return [
        ("kallikratis_version_info", {"component": name, "version": version}, 1)
        for name, version in found.items()
        if version
    ]

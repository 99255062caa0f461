"""`kallikratis verify`: the project's testinfra suites (tests/infra) run against the fleet.

Each municipality is reached over the same pinned SSH as everything else (an ssh_config we
write); what a suite expects of a municipality (domain, display name, modules, CA) comes from
the inventory through a JSON file named by KALLIKRATIS_VERIFY_SPEC.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from kallikratis import model, paths
from kallikratis.keys import KeyStore, atomic_write
from kallikratis.stackvars import tls_paths

SUITES = paths.PROJECT_ROOT / "tests" / "infra"


@dataclass(frozen=True)
class Check:
    slug: str
    name: str
    passed: bool
    message: str = ""


def write_ssh_config(fleet: model.Fleet, state_dir: Path) -> Path:
    keys = KeyStore(state_dir, fleet.name)
    lines = []
    for m in fleet.municipalities:
        lines += [
            f"Host {m.slug}",
            f"  HostName {m.ip}",
            f"  User {fleet.admin_user}",
            f"  IdentityFile {keys.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {keys.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  ConnectTimeout 10",
            "  ControlMaster auto",
            "  ControlPath /tmp/.kk-verify-%C",
            "  ControlPersist 120",
            "",
        ]
    path = keys.dir / "ssh_config"
    atomic_write(path, "\n".join(lines), 0o600)
    return path


def write_spec(fleet: model.Fleet, selection: list[model.Municipality], state_dir: Path) -> Path:
    spec = {
        m.slug: {
            "slug": m.slug,
            "display_name": m.display_name,
            "domain": m.domain,
            "ip": str(m.ip),
            "modules": list(m.modules),
            "all_modules": list(model.MODULES),
            "ca_file": str(tls_paths(state_dir, fleet.name, m.slug)["ca"]),
            "mgmt_network": str(fleet.network.cidr),
            "language": m.language,
            "unattended_upgrades": bool(m.vars.get("base_unattended_upgrades", False)),
            "data_dir": str(fleet.inventory / "host_vars" / m.slug / "data"),
            "datasets": list(m.datasets),
        }
        for m in selection
    }
    path = KeyStore(state_dir, fleet.name).dir / "verify-spec.json"
    atomic_write(path, json.dumps(spec, ensure_ascii=False, indent=2), 0o644)
    return path


def run(
    fleet: model.Fleet,
    selection: list[model.Municipality],
    state_dir: Path,
    keyword: str | None = None,
) -> tuple[list[Check], float]:
    ssh_config = write_ssh_config(fleet, state_dir)
    spec = write_spec(fleet, selection, state_dir)
    junit = KeyStore(state_dir, fleet.name).dir / f"verify-{os.getpid()}.xml"
    hosts = ",".join(f"ssh://{m.slug}" for m in selection)
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITES),
        "-p",
        "no:cacheprovider",
        "-q",
        f"--hosts={hosts}",
        f"--ssh-config={ssh_config}",
        f"--junitxml={junit}",
        "--rootdir",
        str(SUITES),
    ]
    if keyword:
        argv += ["-k", keyword]
    env = dict(os.environ, KALLIKRATIS_VERIFY_SPEC=str(spec))
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=SUITES)
    took = time.monotonic() - start
    if not junit.exists():
        return [Check("*", "testinfra", False, (done.stdout + done.stderr)[-2000:])], took
    checks = parse_junit(junit.read_text())
    junit.unlink(missing_ok=True)
    return checks, took


def parse_junit(text: str) -> list[Check]:
    out = []
    for case in ET.fromstring(text).iter("testcase"):
        name = case.get("name", "")
        base, _, param = name.partition("[")
        slug = param.rstrip("]").removeprefix("ssh://") if param else "*"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skipped = case.find("skipped")
        if skipped is not None:
            out.append(Check(slug, base, False, "skipped: " + skipped.get("message", "")))
        elif problem is not None:
            out.append(Check(slug, base, False, (problem.get("message") or "")[:500]))
        else:
            out.append(Check(slug, base, True))
    return out

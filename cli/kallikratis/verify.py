"""`kallikratis verify`: the testinfra suites in kallikratis/checks/ run against the fleet.

Each municipality is reached over the same pinned SSH as everything else (an ssh_config we
write); what a suite expects of a municipality (domain, display name, modules, CA, watched
services, maintenance mode expected or not) comes from the inventory through a JSON file named
by KALLIKRATIS_VERIFY_SPEC.

While a patch run holds a municipality in maintenance mode, nginx answers 503 to everyone but
requests carrying the header X-Kallikratis-Maintenance-Bypass with the municipality's token
(vault_web_maintenance_bypass). The tokens reach the suites only through the environment
variable KALLIKRATIS_VERIFY_BYPASS_TOKENS (JSON slug -> token), never through a file.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from kallikratis import model, ssh, stackvars, verifyprogress
from kallikratis.errors import KallikratisError
from kallikratis.keys import KeyStore, atomic_write
from kallikratis.paths import StateDir
from kallikratis.secrets import read_secret

log = logging.getLogger(__name__)

SUITES = Path(__file__).resolve().parent / "checks"
SPEC_ENV = "KALLIKRATIS_VERIFY_SPEC"
#: JSON {slug: token} for the maintenance bypass header (checks/conftest.py reads it)
BYPASS_ENV = "KALLIKRATIS_VERIFY_BYPASS_TOKENS"
BYPASS_HEADER = "X-Kallikratis-Maintenance-Bypass"
BYPASS_SECRET = "vault_web_maintenance_bypass"


@dataclass(frozen=True)
class Check:
    slug: str
    name: str
    passed: bool
    message: str = ""


def control_path(state_dir: Path, run: str) -> str | None:
    """Where a run's SSH control masters live: in the state directory's 0700 cp/ (never /tmp,
    where another local user could plant one), per run, so a run closes only the masters it
    opened (:func:`close_masters`). None: the state path is too long for a socket."""
    return StateDir(state_dir).verify_control_path(run)


def write_ssh_config(fleet: model.Fleet, state_dir: Path, run: str = "") -> Path:
    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    keys.secure()
    path_pattern = control_path(state_dir, run)
    if path_pattern is None:
        log.warning("state directory %s: path too long for SSH control sockets", state_dir)
    mux = (
        ["  ControlMaster auto", f"  ControlPath {path_pattern}", "  ControlPersist 120"]
        if path_pattern
        else ["  ControlMaster no", "  ControlPath none"]
    )
    lines = []
    for m in fleet.municipalities:
        lines += [
            f"Host {m.slug}",
            f"  HostName {m.ip}",
            f"  User {fleet.admin_user}",
            f"  IdentityFile {keys.client_key}",
            *(
                [f"  IdentityFile {keys.state.previous_client_key}"]
                if keys.state.previous_client_key.exists()
                else []
            ),
            *(f"  {name} {value}" for name, value in ssh.pinned_options(keys.known_hosts)),
            "  BatchMode yes",
            "  ConnectTimeout 10",
            *mux,
            "",
        ]
    path = keys.paths.ssh_config(run)
    atomic_write(path, "\n".join(lines), 0o600)
    return path


def write_spec(
    fleet: model.Fleet,
    selection: list[model.Municipality],
    state_dir: Path,
    *,
    maintenance: bool = False,
    run: str = "",
) -> Path:
    """What the suites expect of each municipality; no secret ever goes into this file."""
    spec = {
        m.slug: {
            "slug": m.slug,
            "display_name": m.display_name,
            "domain": m.domain,
            "ip": str(m.ip),
            "modules": list(m.modules),
            "all_modules": list(model.MODULES),
            "ca_file": _trust_anchor(fleet, m, state_dir),
            "tls": m.tls,
            # verify's requests come from the controller: are the admin paths open to it?
            "admin_allowed": fleet.admin_allows(fleet.network.controller),
            "mgmt_sources": [str(n) for n in fleet.management_sources],
            # control's backup store: the municipalities reach its SSH (roles/backupstore)
            "backup_store": fleet.control is not None and not m.is_central,
            "backup_clients": [f"{t.ip}/32" for t in fleet.tenants]
            if "control" in m.central_roles
            else [],
            "language": m.language,
            # the network a portal names in its schema.org JSON-LD ({} without a hub)
            "hub": {} if m.is_central else stackvars.hub_link(fleet),
            "unattended_upgrades": bool(m.vars.get("base_unattended_upgrades", False)),
            "data_dir": str(fleet.inventory / "host_vars" / m.slug / "data"),
            "datasets": list(m.datasets),
            "watch_services": list(m.watch_services),
            "maintenance": maintenance,
            "central_roles": list(m.central_roles),
            # control's own volume for the repositories (roles/backupstore mounts it)
            "backup_volume_label": model.DATA_SERIAL if m.backup_volume_gib else "",
        }
        for m in selection
    }
    path = StateDir(state_dir).fleet(fleet.name).verify_spec(run)
    atomic_write(path, json.dumps(spec, ensure_ascii=False, indent=2))
    return path


def _trust_anchor(fleet: model.Fleet, m: model.Municipality, state_dir: Path) -> str:
    """The CA file the checks trust for the municipality ("": the system's trust store)."""
    if m.tls == "acme":
        return fleet.acme.roots if fleet.acme else ""
    return str(StateDir(state_dir).fleet(fleet.name).ca_cert)


def bypass_tokens(
    fleet: model.Fleet, selection: list[model.Municipality], keys: KeyStore, *, required: bool
) -> tuple[dict[str, str], list[Check]]:
    """The maintenance bypass token of each municipality that has one.

    A municipality without one (never deployed since the token was introduced) is a failed
    check when *required* (maintenance mode expected), else it is just verified without it.
    """
    tokens: dict[str, str] = {}
    missing: list[Check] = []
    for m in selection:
        try:
            tokens[m.slug] = read_secret(fleet, m.slug, keys, BYPASS_SECRET)
        except KallikratisError as exc:
            if required:
                missing.append(Check(m.slug, "maintenance_bypass_token", False, exc.message))
            else:
                log.debug("%s: verifying without the maintenance bypass: %s", m.slug, exc)
    return tokens, missing


def run(
    fleet: model.Fleet,
    selection: list[model.Municipality],
    state_dir: Path,
    keyword: str | None = None,
    *,
    maintenance: bool = False,
    progress: Callable[[str, str], None] | None = None,
) -> tuple[list[Check], float]:
    """Run the suites; *maintenance*: the municipalities are expected to be in maintenance
    mode (a patch run verifies before leaving it), else expected NOT to be. *progress* is
    called (slug, phase) as each municipality's checks start and when they are done."""
    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    tokens, missing = bypass_tokens(fleet, selection, keys, required=maintenance)
    run_id = str(os.getpid())  # per-run files and masters: concurrent runs stay apart
    ssh_config = write_ssh_config(fleet, state_dir, run_id)
    spec = write_spec(fleet, selection, state_dir, maintenance=maintenance, run=run_id)
    junit = keys.paths.verify_report(os.getpid())
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
    env = dict(os.environ)
    env[SPEC_ENV] = str(spec)
    env[BYPASS_ENV] = json.dumps(tokens)
    start = time.monotonic()
    try:
        done = verifyprogress.run_pytest(argv, env, SUITES, [m.slug for m in selection], progress)
    finally:
        close_masters(ssh_config, selection)
        ssh_config.unlink(missing_ok=True)
        spec.unlink(missing_ok=True)
    took = time.monotonic() - start
    if not junit.exists():
        output = _redact(done.stdout + done.stderr, tokens.values())
        return [*missing, Check("*", "testinfra", False, output[-2000:])], took
    checks = [
        replace(c, message=_redact(c.message, tokens.values()))
        for c in parse_junit(junit.read_text())
    ]
    junit.unlink(missing_ok=True)
    return [*missing, *checks], took


def close_masters(ssh_config: Path, selection: list[model.Municipality]) -> None:
    """End the run's SSH control masters: a VM rebooted or reverted after this run must not
    be reached through a connection to its previous life. *ssh_config* is the run's own
    (its ControlPath is per run), so another run's masters are never closed."""
    for m in selection:
        subprocess.run(
            ["ssh", "-F", str(ssh_config), "-O", "exit", m.slug],
            capture_output=True,
            timeout=15,
            check=False,
        )


def _redact(text: str, secrets: Iterable[str]) -> str:
    """Failure output may quote request headers: never let a token through."""
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


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

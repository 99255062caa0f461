"""Running playbooks through ansible-runner, read through its structured events and stats."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kallikratis import paths

log = logging.getLogger(__name__)
#: what ansible-playbook says when it stops before any host: errors, and an unmatched pattern
_START_PROBLEM = re.compile(
    r"^\s*(\[ERROR\]|ERROR!|\[WARNING\]: Could not match supplied host pattern|"
    r"\[WARNING\]: No inventory was parsed|"
    r"\[WARNING\]: provided hosts list is empty|"
    r"\[WARNING\]: Unable to parse|skipping: no hosts matched)"
)
#: groups that site.yml plays target but an inventory need not have (a fleet without central
#: VMs): ansible-playbook's "could not match" about them is not a reason for anything
OPTIONAL_GROUPS = ("central",)
TaskProgress = Callable[[str, str], None]  # (host, "task name" or final word)


@dataclass
class HostOutcome:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (task, message)

    @property
    def result(self) -> str:
        if self.unreachable:
            return "unreachable"
        return "failed" if self.failed else "ok"


@dataclass
class PlaybookRun:
    playbook: str
    rc: int
    seconds: float
    artifacts: Path
    hosts: dict[str, HostOutcome]
    strategy: str
    #: why the playbook did not start on any host ("" when it did): ansible-playbook's own words
    not_started: str = ""


def mitogen_strategy_dir() -> Path | None:
    """The mitogen strategy plugins, when the mitogen package is installed and usable."""
    if os.environ.get("KALLIKRATIS_ANSIBLE_STOCK"):
        return None
    try:
        import ansible_mitogen  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import problem means: run stock Ansible
        return None
    path = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return path if path.is_dir() else None


def _message(res: dict[str, Any]) -> str:
    if res.get("_ansible_no_log") or res.get("censored"):
        return "(output hidden: no_log task)"
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if isinstance(msg, list):
        msg = "; ".join(map(str, msg))
    return str(msg).strip()[:2000]


def start_problem(stdout: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """ansible-playbook's reason for not starting, from its stdout: its error and warning
    lines about the inventory and the host pattern only (a few, shortened, *secrets* redacted)."""
    lines = []
    optional = tuple(f"host pattern, ignoring: {g}" for g in OPTIONAL_GROUPS)
    for line in stdout.splitlines():
        if line.rstrip().endswith(optional):
            continue
        if _START_PROBLEM.match(line) and line.strip() not in lines:
            lines.append(line.strip()[:300])
    text = "; ".join(lines[:5])
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _stdout(runner: Any) -> str:
    try:
        with runner.stdout as fh:
            return str(fh.read())
    except Exception as exc:  # noqa: BLE001 - no stdout kept: the status says what we know
        log.debug("no ansible-runner stdout: %s", exc)
        return ""


def runner_environment(state_dir: Path) -> tuple[dict[str, str], str]:
    """The environment of ansible-playbook under ansible-runner, and the strategy it uses.

    ansible-runner turns ANSIBLE_HOST_KEY_CHECKING off unless told otherwise, and mitogen then
    disables checking with options placed ahead of our pinned ones (ssh takes the first
    value): host keys must be checked, always.
    """
    env = {
        "ANSIBLE_CONFIG": str(paths.PROJECT_ROOT / "ansible.cfg"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "KALLIKRATIS_STATE_DIR": str(state_dir),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        # ansible-playbook from the same environment as this Python, whatever PATH we inherited
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    # control sockets (Ansible's ssh masters, mitogen's own listener via TMPDIR) in the 0700
    # state directory, never in /tmp where another local user could plant or reach one
    state = paths.StateDir(state_dir)
    cp = state.socket_dir(paths.ANSIBLE_SOCKET_TAIL)
    if cp is not None:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(cp)
    else:  # too long a path for a socket: no multiplexing rather than a socket elsewhere
        env["ANSIBLE_SSH_ARGS"] = (
            "-o ControlMaster=no -o ControlPath=none -o ServerAliveInterval=15"
        )
    tmp = state.socket_dir(paths.MITOGEN_SOCKET_TAIL)
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    strategy = "linear"
    mitogen = mitogen_strategy_dir()
    if mitogen is not None:
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(mitogen)
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
        strategy = "mitogen_linear"
    return env, strategy


def runner_arguments(
    playbook: str,
    inventory: Path,
    private: Path,
    limit: list[str],
    env: dict[str, str],
    check: bool,
    extravars: dict[str, Any] | None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """What ansible_runner.run gets (but the event handler). The inventory is absolute: the
    runner resolves a relative one from its private data dir, where it matches no host."""
    return {
        "private_data_dir": str(private),
        "project_dir": str(paths.PROJECT_ROOT),
        "playbook": str(paths.PROJECT_ROOT / "playbooks" / playbook),
        "inventory": os.path.abspath(inventory),
        "limit": ",".join(limit),
        "envvars": env,
        "extravars": extravars or {},
        "cmdline": "--check --diff" if check else None,
        "tags": ",".join(tags) or None,
        "quiet": True,
        "suppress_env_files": True,
    }


def run_playbook(
    playbook: str,
    inventory: Path,
    *,
    limit: list[str],
    state_dir: Path,
    check: bool = False,
    progress: TaskProgress | None = None,
    extravars: dict[str, Any] | None = None,
    environment: dict[str, str] | None = None,
    tag: str = "",
    only: Sequence[str] = (),
) -> PlaybookRun:
    """*environment*: more variables for ansible-playbook (the fleet's actual addresses for
    the vars plugin: :func:`kallikratis.addresses.to_env`); *tag*: tells apart the private
    directories of runs started side by side; *only*: ansible tags (site.yml tags each role
    with its name), none = every task."""
    import ansible_runner

    runs = paths.StateDir(state_dir).secure().runs
    runs.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    private = runs / f"{stamp}-{Path(playbook).stem}-{os.getpid()}{'-' + tag if tag else ''}"
    private.mkdir(mode=0o700)
    hosts: dict[str, HostOutcome] = {h: HostOutcome() for h in limit}
    env, strategy = runner_environment(state_dir)
    env.update(environment or {})

    seen: set[str] = set()

    def on_event(event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        host = data.get("host")
        kind = event.get("event", "")
        if host in hosts:
            seen.add(host)
            if kind == "runner_on_start" and progress:
                progress(host, data.get("task", ""))
            elif (
                kind == "runner_on_failed"
                and not data.get("ignore_errors")
                or kind == "runner_on_unreachable"
            ):
                hosts[host].failures.append((data.get("task", ""), _message(data.get("res", {}))))
        return True

    start = time.monotonic()
    runner = ansible_runner.run(
        **runner_arguments(playbook, inventory, private, limit, env, check, extravars, only),
        event_handler=on_event,
    )
    stats = runner.stats or {}
    for key, attr in (
        ("ok", "ok"),
        ("changed", "changed"),
        ("failures", "failed"),
        ("dark", "unreachable"),
        ("skipped", "skipped"),
    ):
        for host, n in (stats.get(key) or {}).items():
            if host in hosts:
                setattr(hosts[host], attr, n)
    reason = ""
    if seen != set(hosts):  # some host never saw a task: ansible's own words say why
        secrets = [str(v) for v in (extravars or {}).values() if isinstance(v, str)]
        reason = start_problem(_stdout(runner), secrets)
    not_started = "" if seen else reason or f"ansible-runner status {runner.status}"
    for host, outcome in hosts.items():
        if not any((outcome.ok, outcome.changed, outcome.failed, outcome.unreachable)):
            outcome.failed = 1
            why = f"ansible did not start on {host}"
            why += f": {not_started or reason}" if not_started or reason else ""
            outcome.failures.append(("(none)", f"{why} (run artifacts: {private})"))
        if progress:
            progress(host, outcome.result)
    return PlaybookRun(
        playbook,
        int(runner.rc or 0),
        time.monotonic() - start,
        private / "artifacts",
        hosts,
        strategy,
        not_started,
    )

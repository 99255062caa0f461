"""OpenSSH, the one SSH path: pinned host keys (StrictHostKeyChecking=yes), our automation key."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def pinned_options(known_hosts: Path) -> list[tuple[str, str]]:
    """The options that pin a VM's host key, for every SSH path we have.

    ``kallikratis ssh`` and the engine (:meth:`SshTarget.options`), Ansible's connection
    (:mod:`kallikratis.stackvars`) and verify's ssh_config (:mod:`kallikratis.verify`) all take
    them from here: only our known_hosts, never the user's or the system's, and never
    trust-on-first-use.
    """
    return [
        ("StrictHostKeyChecking", "yes"),
        ("UserKnownHostsFile", str(known_hosts)),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("IdentitiesOnly", "yes"),
    ]


def option_args(options: list[tuple[str, str]]) -> list[str]:
    """``-o Name=value`` arguments of the ssh command line."""
    return [arg for name, value in options for arg in ("-o", f"{name}={value}")]


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    identity: Path
    known_hosts: Path
    #: offered after *identity*: the previous automation key while a rotation is pending
    more_identities: tuple[Path, ...] = ()
    port: int = 22

    def options(self) -> list[str]:
        ids = [arg for key in (self.identity, *self.more_identities) for arg in ("-i", str(key))]
        port = ["-p", str(self.port)] if self.port != 22 else []
        return [
            *option_args([("BatchMode", "yes"), *pinned_options(self.known_hosts)]),
            *option_args([("LogLevel", "ERROR")]),
            *port,
            *ids,
        ]

    def argv(self, command: list[str] | None = None, *, tty: bool = False) -> list[str]:
        argv = ["ssh", *self.options(), "-t" if tty else "-T", f"{self.user}@{self.host}"]
        if command:
            argv += ["--", *command]
        return argv


def port_open(host: str, port: int = 22, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def login_works(target: SshTarget, timeout: float = 10.0) -> bool:
    argv = [*target.argv(["true"])]
    argv.insert(1, "-o")
    argv.insert(2, f"ConnectTimeout={max(1, int(timeout))}")
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def wait_ready(target: SshTarget, timeout: float, poll: float = 0.25) -> float | None:
    """Seconds until a login with the pinned key works, or None on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if port_open(target.host, timeout=min(1.0, poll * 4)) and login_works(target):
            return time.monotonic() - start
        time.sleep(poll)
    return None

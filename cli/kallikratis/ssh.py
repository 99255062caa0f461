"""OpenSSH, the one SSH path: pinned host keys (StrictHostKeyChecking=yes), our automation key."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    identity: Path
    known_hosts: Path

    def options(self) -> list[str]:
        return [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.identity),
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

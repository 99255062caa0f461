"""What a patch run does inside a municipality's VM, over the pinned SSH as the admin user.

Each operation is one SSH command running a short POSIX shell script under ``sudo -n``;
every one is safe to repeat (a re-run after an interrupted patch converges).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import dataclass

from kallikratis.errors import KallikratisError
from kallikratis.ssh import SshTarget, wait_ready
from kallikratis.stackvars import VM_MAINTENANCE_FLAG

MAINTENANCE_FLAG = VM_MAINTENANCE_FLAG
APT_ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a APT_LISTCHANGES_FRONTEND=none"
DPKG_OPTS = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
# "Inst pkg [old] (new Origin:Suite/label [arch])" from apt-get --simulate
#: the longest any one guest command may take (seconds), by kind; a patch run's stop budget
#: (:mod:`kallikratis.patchbudget`) is computed from these
COMMAND_TIMEOUT = 300.0
UPGRADE_TIMEOUT = 1800.0
REBOOT_TIMEOUT = 600.0
_INST = re.compile(r"^Inst (\S+) (?:\[([^\]]*)\] )?\((\S+) ([^\[\)]*)")


class GuestError(KallikratisError):
    """A command inside the VM failed (or the VM could not be reached)."""

    exit_code = 5


@dataclass(frozen=True)
class Upgrade:
    package: str
    old: str  # "" for a package newly pulled in
    new: str
    origin: str

    @property
    def security(self) -> bool:
        return "security" in self.origin.lower()

    def __str__(self) -> str:
        return f"{self.package} {self.old or '(new)'} → {self.new}"


def parse_simulation(text: str) -> list[Upgrade]:
    """The installs and upgrades an ``apt-get --simulate`` run announces."""
    out = []
    for line in text.splitlines():
        match = _INST.match(line.strip())
        if match:
            pkg, old, new, origin = match.groups()
            out.append(Upgrade(pkg, old or "", new, origin.strip().rstrip(",")))
    return out


def fetch_errors(text: str) -> list[str]:
    """apt-get update's complaints about sources it could not read."""
    return [
        line.strip()
        for line in text.splitlines()
        if re.match(r"^(Err:|E: |W: Failed to fetch|W: Some index files failed)", line.strip())
    ]


class Guest:
    """One VM, reached over SSH with the fleet's automation key and pinned host key."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def command(self, script: str) -> list[str]:
        """The ssh command line running *script* as root in the VM (pinned, our key)."""
        argv = self.target.argv([f"sudo -n sh -euc {shlex.quote(script)}"])
        argv[1:1] = ["-o", "ServerAliveInterval=10", "-o", "ConnectTimeout=15"]
        return argv

    def run(
        self,
        script: str,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = True,
        stdin: str | None = None,
    ) -> str:
        """Run *script* as root in the VM (*stdin*: text fed to it; default: nothing)."""
        argv = self.command(script)
        try:
            done = subprocess.run(
                argv,
                **({"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise GuestError(f"{self.target.host}: timed out after {timeout:.0f} s") from exc
        if check and done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip())[-600:]
            what = "SSH failed" if done.returncode == 255 else f"exit {done.returncode}"
            raise GuestError(f"{self.target.host}: {what}: {tail}")
        return done.stdout

    # -- read ------------------------------------------------------------------------------
    def pending(self, security_only: bool = False) -> list[Upgrade]:
        """Refresh the package lists and list what an upgrade would install."""
        out = self.run(f"{APT_ENV} apt-get update -q 2>&1", timeout=600)
        errors = fetch_errors(out)
        if errors:
            raise GuestError(f"apt-get update could not read every source: {errors[0]}")
        sim = self.run(f"{APT_ENV} apt-get --simulate -q {DPKG_OPTS} dist-upgrade", timeout=300)
        upgrades = parse_simulation(sim)
        return [u for u in upgrades if u.security] if security_only else upgrades

    def in_maintenance(self) -> bool:
        return self.run(f"test -e {MAINTENANCE_FLAG} && echo yes || echo no").strip() == "yes"

    def boot_id(self) -> str:
        return self.run("cat /proc/sys/kernel/random/boot_id").strip()

    def reboot_required(self) -> bool:
        return self.run("test -e /run/reboot-required && echo yes || echo no").strip() == "yes"

    # -- change ----------------------------------------------------------------------------
    def maintenance(self, on: bool) -> None:
        if on:
            self.run(f"install -D -m 0644 /dev/null {MAINTENANCE_FLAG} && sync")
        else:
            self.run(f"rm -f {MAINTENANCE_FLAG}")

    def apply(self, upgrades: list[Upgrade], security_only: bool) -> str:
        """Finish any interrupted dpkg run, then upgrade (only *upgrades* when security-only)."""
        if security_only:
            names = " ".join(shlex.quote(u.package) for u in upgrades)
            step = f"apt-get install -y -q --only-upgrade {DPKG_OPTS} {names}" if names else "true"
        else:
            step = f"apt-get dist-upgrade -y -q {DPKG_OPTS}"
        script = f"export {APT_ENV}; dpkg --configure -a; {step} 2>&1"
        return self.run(script, timeout=UPGRADE_TIMEOUT)

    def installed(self, packages: list[str]) -> dict[str, str]:
        if not packages:
            return {}
        names = " ".join(shlex.quote(p) for p in packages)
        out = self.run(f"dpkg-query -W -f '${{Package}} ${{Version}}\\n' {names} || true")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def set_clock(self, epoch: float) -> None:
        self.run(f"date -u -s @{int(epoch)} >/dev/null")

    def _wait_boot_finished(self, deadline: float) -> None:
        """Until systemd has no start job left (every service up, or failed: verify tells
        which), so that a patch run verifies a booted VM, not one still starting services."""
        left = int(max(10.0, deadline - time.monotonic()))
        self.run(
            f"timeout {left} systemctl is-system-running --wait >/dev/null || true",
            timeout=left + 30,
            check=False,
        )

    def reboot(self, timeout: float = REBOOT_TIMEOUT) -> float:
        """Reboot and wait until SSH answers from the new boot; the seconds it took."""
        start = time.monotonic()
        before = self.boot_id()
        self.run("systemctl reboot", check=False)  # the connection drops with the guest
        deadline = start + timeout
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            if wait_ready(self.target, max(1.0, left), poll=1.0) is None:
                break
            try:
                if self.boot_id() != before:
                    self._wait_boot_finished(deadline)
                    return time.monotonic() - start
            except GuestError:
                pass
            time.sleep(2.0)
        raise GuestError(f"{self.target.host}: not back within {timeout:.0f} s of the reboot")

"""Debian's Chromium, headless, reaching a lab VM by its domain with only the fleet CA trusted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def browser_profile(tmp_path: Path, ca_file: Path) -> dict[str, str]:
    """A throw-away HOME whose NSS database trusts only our fleet CA (as a CA, for TLS)."""
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "kallikratis-fleet-ca", "-t", "C,,"]
        + ["-i", str(ca_file)],
        check=True,
    )
    return dict(os.environ, HOME=str(home))


def headless(tmp_path: Path, domain: str, ip: str) -> list[str]:
    """chromium's command line up to the URL: *domain* resolves to *ip*, nothing else."""
    return [
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
        f"--host-resolver-rules=MAP {domain} {ip}",
    ]

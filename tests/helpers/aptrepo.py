"""A local, signed apt repository offering the test package `kallikratis-probe`.

The end-to-end tests of `kallikratis patch` serve it inside the lab's network namespace to real
Debian 13 VMs; the unit suite (tests/unit/test_aptrepo.py) checks it with the real apt.

    repo = AptRepo(tmp_path / "apt")
    repo.build()                       # throwaway signing key + the three .debs (idempotent)
    repo.publish(["1.0"])              # the index offers only these versions
    with repo.serve("10.77.0.1", 0) as url:
        entry = repo.source_entry(url)  # the inventory's apt_sources item
        ...
        repo.publish(["1.0", "1.1"])   # a new "update" appears, atomically for apt clients

The versions of the probe (one systemd service, `kallikratis-probe.service`, whose program
writes its version to /run/kallikratis-probe/version and idles; plus
/usr/share/kallikratis-probe/VERSION):

* 1.0 is good;
* 1.1 is good and asks for a reboot the Debian way (/run/reboot-required and .pkgs);
* 1.2 is broken: its program exits non-zero at once, so the service ends up failed, while the
  package itself installs "successfully" (only a health check notices).

Layout under `root`: `repo/` is what `serve` publishes (dists/, pool/); `private/` holds the
secret signing key and the package build trees and is never served. The index is signed with
an ed25519 key (InRelease and Release.gpg), so clients verify it with `Signed-By:`, never
`trusted=yes`. Index files are also published by hash (`Acquire-By-Hash: yes`) and never
deleted, and InRelease is replaced last: an apt client running during `publish` sees either the
old or the new index, complete.

Only dpkg-deb (always on Debian) and gpg (the Debian package gnupg) are needed.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import gzip
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PACKAGE = "kallikratis-probe"
SERVICE = f"{PACKAGE}.service"
SUITE = "kallikratis"
COMPONENT = "main"
ARCHITECTURES = ("amd64", "all")
SOURCE_NAME = "kallikratis-test"
MAINTAINER = "Kallikratis test suite <kallikratis-tests@example.invalid>"
KEY_UID = "Kallikratis test repository (throwaway) <kallikratis-tests@example.invalid>"
#: Timestamps inside the .debs (reproducible builds): 2025-01-01T00:00:00Z.
SOURCE_DATE_EPOCH = 1735689600
#: Release Date and signatures lie this far in the past: a VM clock a little behind the host's
#: must not see a Release "not valid yet" or a key "created in the future".
CLOCK_SLACK = timedelta(minutes=5)
#: Set to 1 to log every HTTP request of `serve` to stderr.
LOG_ENV = "KALLIKRATIS_APTREPO_LOG"
PROBE_PROGRAM = f"/usr/lib/{PACKAGE}/probe"


@dataclass(frozen=True)
class Probe:
    """One version of the test package."""

    version: str
    requests_reboot: bool = False
    broken: bool = False


PROBES = {
    p.version: p
    for p in (Probe("1.0"), Probe("1.1", requests_reboot=True), Probe("1.2", broken=True))
}
VERSIONS = tuple(PROBES)


class AptRepoError(RuntimeError):
    """A tool the repository needs failed or is missing."""


# -- package contents ---------------------------------------------------------------------------

UNIT = f"""\
[Unit]
Description=Kallikratis patch-test probe
Documentation=file:///usr/share/{PACKAGE}/VERSION
StartLimitIntervalSec=30
StartLimitBurst=3

[Service]
Type=exec
ExecStart={PROBE_PROGRAM}
RuntimeDirectory={PACKAGE}
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

GOOD_PROGRAM = """\
#!/bin/sh
# kallikratis-probe {version}: write the version, then idle until stopped.
set -eu
dir="${{RUNTIME_DIRECTORY:-/run/kallikratis-probe}}"
mkdir -p "$dir"
printf '%s\\n' '{version}' >"$dir/version.tmp"
mv -f "$dir/version.tmp" "$dir/version"
exec sleep infinity
"""

BROKEN_PROGRAM = """\
#!/bin/sh
# kallikratis-probe {version}: broken on purpose (the patch tests' health check must notice).
echo 'kallikratis-probe {version}: broken on purpose' >&2
exit 3
"""

REBOOT_REQUEST = f"""\
    # Ask for a reboot the Debian way; `kallikratis patch` reboots when the flag exists.
    touch /run/reboot-required
    grep -qsx '{PACKAGE}' /run/reboot-required.pkgs || echo '{PACKAGE}' >>/run/reboot-required.pkgs
"""

POSTINST = """\
#!/bin/sh
# postinst of {package} {version}
set -e
if [ "$1" = configure ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl enable {service}
    fi
    if [ -d /run/systemd/system ]; then
        # a previous broken version may have hit the start limit: forget it
        systemctl reset-failed {service} || true
        systemctl restart {service}{restart_guard}
    fi
{reboot}fi
exit 0
"""

PRERM = """\
#!/bin/sh
# prerm of {package} {version}
set -e
case "$1" in
remove | deconfigure)
    if [ -d /run/systemd/system ]; then
        systemctl stop {service} || true
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable {service} || true
    fi
    ;;
esac
exit 0
"""

POSTRM = """\
#!/bin/sh
# postrm of {package} {version}
set -e
case "$1" in
remove | purge)
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl reset-failed {service} 2>/dev/null || true
    fi
    ;;
esac
if [ "$1" = purge ]; then
    rm -rf /run/{package}
fi
exit 0
"""


def _files(probe: Probe) -> dict[str, tuple[str, int]]:
    """Path in the package -> (content, mode)."""
    program = BROKEN_PROGRAM if probe.broken else GOOD_PROGRAM
    return {
        f"usr/lib/systemd/system/{SERVICE}": (UNIT, 0o644),
        PROBE_PROGRAM.lstrip("/"): (program.format(version=probe.version), 0o755),
        f"usr/share/{PACKAGE}/VERSION": (f"{probe.version}\n", 0o644),
    }


def _scripts(probe: Probe) -> dict[str, str]:
    fields = {"package": PACKAGE, "version": probe.version, "service": SERVICE}
    postinst = POSTINST.format(
        **fields,
        restart_guard=" || true" if probe.broken else "",
        reboot=REBOOT_REQUEST if probe.requests_reboot else "",
    )
    return {
        "postinst": postinst,
        "prerm": PRERM.format(**fields),
        "postrm": POSTRM.format(**fields),
    }


def _control(probe: Probe, installed_kib: int) -> str:
    state = "broken on purpose" if probe.broken else "good"
    reboot = ", requests a reboot" if probe.requests_reboot else ""
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {probe.version}\n"
        "Architecture: all\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        "Section: misc\n"
        "Priority: optional\n"
        f"Description: Kallikratis patch-test probe ({state}{reboot})\n"
        " A tiny systemd service used by the end-to-end tests of `kallikratis patch`:\n"
        " it writes its version to /run/kallikratis-probe/version and idles.\n"
    )


# -- small helpers ------------------------------------------------------------------------------


def _run(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    except FileNotFoundError as exc:
        package = "gnupg" if argv[0].startswith("gpg") else "dpkg"
        raise AptRepoError(f"{argv[0]} not found: install the Debian package {package}") from exc
    if done.returncode != 0:
        raise AptRepoError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _release_date(text: str) -> datetime | None:
    match = re.search(r"^Date: (.+)$", text, re.MULTILINE)
    return email.utils.parsedate_to_datetime(match.group(1)) if match else None


class _Gpg:
    """gpg on a short-lived GNUPGHOME (an agent socket path must stay short), removed after use."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="kk-gpg-"))
        self.env = {**os.environ, "GNUPGHOME": str(self.home), "LC_ALL": "C"}

    def __call__(self, *args: str, at: datetime, stdin: str | None = None) -> str:
        faked = f"{int(at.timestamp())}!"
        base = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        return _run([*base, "--faked-system-time", faked, *args], env=self.env, stdin=stdin)

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--kill", "all"], env=self.env, capture_output=True, timeout=30
            )
        shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def _gpg() -> Iterator[_Gpg]:
    gpg = _Gpg()
    try:
        yield gpg
    finally:
        gpg.close()


# -- HTTP ---------------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; every answer is a full 200 (no 304: publishes within one second of an
    apt run would otherwise hide behind If-Modified-Since, whose resolution is a second)."""

    def send_head(self) -> Any:
        del self.headers["If-Modified-Since"]
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get(LOG_ENV) == "1":
            super().log_message(format, *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


# -- the repository -----------------------------------------------------------------------------


class AptRepo:
    """A signed apt repository (suite `kallikratis`, component `main`) under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.repo = self.root / "repo"
        self.private = self.root / "private"
        self.dists = self.repo / "dists" / SUITE
        self.pool = self.repo / "pool" / COMPONENT / PACKAGE[0] / PACKAGE

    # key ---------------------------------------------------------------------------------------

    @property
    def _secret_key(self) -> Path:
        return self.private / "signing-key.asc"

    @property
    def _public_key_file(self) -> Path:
        return self.private / "public-key.asc"

    @property
    def public_key(self) -> str:
        """The ASCII-armored public key that signs the index (for `Signed-By:`)."""
        if not self._public_key_file.exists():
            raise AptRepoError(f"no key yet in {self.private}: call build() first")
        return self._public_key_file.read_text()

    def _ensure_key(self) -> None:
        if self._secret_key.exists() and self._public_key_file.exists():
            return
        created = datetime.now(UTC) - timedelta(days=1)
        with _gpg() as gpg:
            gpg("--quick-gen-key", KEY_UID, "ed25519", "sign", "never", at=created)
            fpr = self._fingerprint(gpg, created)
            secret = gpg("--armor", "--export-secret-keys", fpr, at=created)
            public = gpg("--armor", "--export", fpr, at=created)
        self.private.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._public_key_file, public.encode())
        _write_atomic(self._secret_key, secret.encode(), mode=0o600)

    @staticmethod
    def _fingerprint(gpg: _Gpg, at: datetime) -> str:
        listing = gpg("--with-colons", "--list-secret-keys", at=at)
        for line in listing.splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise AptRepoError(f"no fingerprint in gpg's key listing:\n{listing}")

    # packages ----------------------------------------------------------------------------------

    def deb(self, version: str) -> Path:
        """The .deb of one version of the probe (in the pool)."""
        return self.pool / f"{PACKAGE}_{version}_all.deb"

    def build(self) -> None:
        """Generate the signing key (once) and the .debs of every version (reproducibly).

        Idempotent: a .deb is replaced only if its bytes changed (they do not, for a given
        version of this module), so a published index stays valid.
        """
        self._ensure_key()
        for probe in PROBES.values():
            self._build_deb(probe)

    def _build_deb(self, probe: Probe) -> None:
        tree = self.private / "build" / f"{PACKAGE}_{probe.version}"
        shutil.rmtree(tree, ignore_errors=True)
        kib = 0
        for rel, (content, mode) in _files(probe).items():
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(mode)
            kib += (len(content.encode()) + 1023) // 1024
        debian = tree / "DEBIAN"
        debian.mkdir()
        md5sums = "".join(
            f"{hashlib.md5((tree / rel).read_bytes()).hexdigest()}  {rel}\n"
            for rel in sorted(_files(probe))
        )
        (debian / "md5sums").write_text(md5sums)
        (debian / "control").write_text(_control(probe, kib))
        for name, script in _scripts(probe).items():
            (debian / name).write_text(script)
            (debian / name).chmod(0o755)
        for path in [tree, *tree.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
            os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
        out = tree.parent / f"{tree.name}.deb"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C"}
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(out)], env=env)
        target = self.deb(probe.version)
        data = out.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            _write_atomic(target, data)

    # index -------------------------------------------------------------------------------------

    def publish(self, versions: Iterable[str]) -> None:
        """(Re)write the signed index so that exactly `versions` of the probe are offered."""
        wanted = list(dict.fromkeys(versions))
        unknown = [v for v in wanted if v not in PROBES]
        if unknown:
            raise ValueError(f"unknown {PACKAGE} versions {unknown}; known: {list(VERSIONS)}")
        missing = [v for v in wanted if not self.deb(v).exists()]
        if missing:
            raise AptRepoError(f"{PACKAGE} {missing} not built: call build() first")
        packages = "\n".join(self._stanza(v) for v in wanted).encode()
        indexes: dict[str, bytes] = {}
        for arch in ARCHITECTURES:
            base = f"{COMPONENT}/binary-{arch}/Packages"
            indexes[base] = packages
            indexes[f"{base}.gz"] = _gzip(packages)
        for rel, data in indexes.items():  # by-hash first: old and new InRelease both resolve
            by_hash = self.dists / Path(rel).parent / "by-hash" / "SHA256"
            _write_atomic(by_hash / hashlib.sha256(data).hexdigest(), data)
        for rel, data in indexes.items():
            _write_atomic(self.dists / rel, data)
        stamp = self._next_date()
        release = self._release(indexes, stamp)
        with _gpg() as gpg:  # signed "at" the Release's Date
            gpg("--import", str(self._secret_key), at=stamp)
            sign = ["--digest-algo", "SHA512", "--yes"]
            detached = gpg(*sign, "--armor", "--detach-sign", at=stamp, stdin=release)
            inline = gpg(*sign, "--clearsign", at=stamp, stdin=release)
        _write_atomic(self.dists / "Release", release.encode())
        _write_atomic(self.dists / "Release.gpg", detached.encode())
        _write_atomic(self.dists / "InRelease", inline.encode())

    def _stanza(self, version: str) -> str:
        deb = self.deb(version)
        data = deb.read_bytes()
        control = _run(["dpkg-deb", "-f", str(deb)]).rstrip("\n")
        return (
            f"{control}\n"
            f"Filename: {deb.relative_to(self.repo).as_posix()}\n"
            f"Size: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )

    def _next_date(self) -> datetime:
        """Now minus the clock slack, and strictly after the previous Release's Date."""
        date = (datetime.now(UTC) - CLOCK_SLACK).replace(microsecond=0)
        previous = self.dists / "Release"
        if previous.exists():
            last = _release_date(previous.read_text())
            if last is not None and last >= date:
                date = last + timedelta(seconds=1)
        return date

    def _release(self, indexes: dict[str, bytes], stamp: datetime) -> str:
        date = email.utils.format_datetime(stamp, usegmt=True)
        lines = [
            "Origin: Kallikratis",
            "Label: Kallikratis test repository",
            f"Suite: {SUITE}",
            f"Codename: {SUITE}",
            f"Date: {date}",
            f"Architectures: {' '.join(ARCHITECTURES)}",
            f"Components: {COMPONENT}",
            "Description: kallikratis-probe test package for the patch tests (throwaway key)",
            "Acquire-By-Hash: yes",
            # like Debian: arch-all packages are also listed in the binary-amd64 index
            "No-Support-for-Architecture-all: Packages",
        ]
        for field, algo in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
            lines.append(f"{field}:")
            for rel, data in sorted(indexes.items()):
                lines.append(f" {algo(data).hexdigest()} {len(data):>8} {rel}")
        return "\n".join(lines) + "\n"

    # clients -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve the repository over HTTP on `host` only (port 0: a free one); yield its URL."""
        self.repo.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_Handler, directory=str(self.repo))
        server_class = _Server6 if ":" in host else _Server
        server = server_class((host, port), handler)
        thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name=f"aptrepo-{host}", daemon=True
        )
        thread.start()
        try:
            bound = server.server_address[1]
            shown = f"[{host}]" if ":" in host else host
            yield f"http://{shown}:{bound}/"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    def source_entry(self, url: str) -> dict[str, Any]:
        """The inventory's `apt_sources` item for this repository served at `url`."""
        return {
            "name": SOURCE_NAME,
            "uris": [url],
            "suites": [SUITE],
            "components": [COMPONENT],
            "signed_by": self.public_key,
        }


def deb822_sources(entry: dict[str, Any]) -> str:
    """A deb822 `.sources` file for one `apt_sources` item, the key embedded in `Signed-By:`."""
    key_lines = [line if line.strip() else "." for line in entry["signed_by"].strip().splitlines()]
    signed_by = "\n".join(f" {line}" for line in key_lines)
    return (
        "Types: deb\n"
        f"URIs: {' '.join(entry['uris'])}\n"
        f"Suites: {' '.join(entry['suites'])}\n"
        f"Components: {' '.join(entry['components'])}\n"
        f"Signed-By:\n{signed_by}\n"
    )

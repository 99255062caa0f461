"""The local signed apt repository of the patch tests (tests/helpers/aptrepo.py), checked with the
real dpkg-deb, gpg and apt: apt accepts the index through `Signed-By:` alone (its own keyrings
are isolated and empty), follows each `publish`, and rejects a tampered index.

Every apt command runs on a private apt root (APT_CONFIG, so the host's apt.conf.d, keyrings and
sources are never read); HTTP goes to 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.aptrepo import (
    PACKAGE,
    PROBE_PROGRAM,
    SERVICE,
    VERSIONS,
    AptRepo,
    deb822_sources,
)

SERVICE_PATH = f"usr/lib/systemd/system/{SERVICE}"
RELEASE_LINES = (
    "Suite: kallikratis",
    "Codename: kallikratis",
    "Components: main",
    "Architectures: amd64 all",
    "MD5Sum:",
    "SHA256:",
)
APT_DIRS = (
    "state/lists/partial",
    "cache/archives/partial",
    "etc/apt.conf.d",
    "etc/sources.list.d",
    "etc/trusted.gpg.d",
    "etc/preferences.d",
    "log",
    "download",
)


@pytest.fixture(scope="module")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("gpg"), "install the Debian package gnupg (scripts/system-packages.txt)"
    root = tmp_path_factory.mktemp("apt-repo")
    AptRepo(root).build()
    return root


@pytest.fixture
def repo(built_once: Path, tmp_path: Path) -> AptRepo:
    """A private copy of one built repository (key and .debs), nothing published yet."""
    shutil.copytree(built_once, tmp_path / "apt-repo")
    return AptRepo(tmp_path / "apt-repo")


@pytest.fixture
def served(repo: AptRepo) -> Iterator[str]:
    repo.publish(["1.0", "1.1"])
    with repo.serve("127.0.0.1", 0) as url:
        yield url


class Apt:
    """apt-get/apt-cache on a private root: own state, cache, sources, no host keyrings."""

    def __init__(self, root: Path, entry: dict[str, object]) -> None:
        self.root = root
        for sub in APT_DIRS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").write_text("")
        (root / "etc/sources.list.d/kallikratis-test.sources").write_text(deb822_sources(entry))
        settings = {
            "Dir::State": root / "state",
            "Dir::State::status": root / "status",
            "Dir::Cache": root / "cache",
            "Dir::Etc": root / "etc",
            "Dir::Etc::main": root / "etc/apt.conf",
            "Dir::Etc::Parts": root / "etc/apt.conf.d",
            "Dir::Etc::SourceList": root / "etc/sources.list",
            "Dir::Etc::SourceParts": root / "etc/sources.list.d",
            "Dir::Etc::Trusted": root / "etc/trusted.gpg",
            "Dir::Etc::TrustedParts": root / "etc/trusted.gpg.d",
            "Dir::Etc::Preferences": root / "etc/preferences",
            "Dir::Etc::PreferencesParts": root / "etc/preferences.d",
            "Dir::Log": root / "log",
            "APT::Architecture": "amd64",
            "APT::Sandbox::User": "root",
            "Acquire::Languages": "none",
            "Acquire::http::Proxy": "DIRECT",
            "Acquire::Retries": "0",
            "Debug::NoLocking": "true",
        }
        config = "".join(f'{key} "{value}";\n' for key, value in settings.items())
        config += 'APT::Architectures { "amd64"; };\n'
        (root / "apt.conf").write_text(config)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
            "APT_CONFIG": str(root / "apt.conf"),
            "LC_ALL": "C",
        }

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env=self.env,
            cwd=self.root / "download",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def update(self) -> subprocess.CompletedProcess[str]:
        """`apt-get update` where any warning (unsigned, unverifiable, missing file) fails."""
        return self.run("apt-get", "-q", "--error-on=any", "update")

    def candidate(self) -> str:
        policy = self.run("apt-cache", "policy", PACKAGE)
        assert policy.returncode == 0, policy.stderr
        match = re.search(r"Candidate: (\S+)", policy.stdout)
        return match.group(1) if match else "(none)"

    def versions(self) -> list[str]:
        madison = self.run("apt-cache", "madison", PACKAGE)
        return sorted(line.split("|")[1].strip() for line in madison.stdout.splitlines())


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _control_fields(deb: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(re.findall(r"^([\w-]+): (.*)$", out, re.MULTILINE))


def _control_dir(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(dest)], check=True, timeout=30)
    return dest


def _extract(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, timeout=30)
    return dest


# -- the packages -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_deb_control_fields_and_contents(repo: AptRepo, version: str) -> None:
    deb = repo.deb(version)
    fields = _control_fields(deb)
    assert fields["Package"] == PACKAGE
    assert fields["Version"] == version
    assert fields["Architecture"] == "all"
    assert "@" in fields["Maintainer"]
    assert fields["Description"].startswith("Kallikratis patch-test probe")
    assert "Depends" not in fields
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "root/root" in listing and re.search(r"\d{4}-", listing)
    tree = _extract(deb, Path(repo.root) / f"x-{version}")
    assert (tree / f"usr/share/{PACKAGE}/VERSION").read_text() == f"{version}\n"
    assert os.access(tree / PROBE_PROGRAM.lstrip("/"), os.X_OK)
    assert (tree / SERVICE_PATH).is_file()


@pytest.mark.parametrize("version", VERSIONS)
def test_maintainer_scripts(repo: AptRepo, version: str, tmp_path: Path) -> None:
    control = _control_dir(repo.deb(version), tmp_path / "DEBIAN")
    for name in ("postinst", "prerm", "postrm"):
        script = control / name
        assert os.access(script, os.X_OK), name
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)
    postinst = (control / "postinst").read_text()
    for step in ("daemon-reload", f"enable {SERVICE}", f"restart {SERVICE}", "reset-failed"):
        assert step in postinst
    assert f"stop {SERVICE}" in (control / "prerm").read_text()
    asks_reboot = "touch /run/reboot-required" in postinst
    assert asks_reboot == (version == "1.1")
    assert ("/run/reboot-required.pkgs" in postinst) == (version == "1.1")
    # only the broken version tolerates a failed restart: its upgrade must "succeed"
    assert (f"restart {SERVICE} || true" in postinst) == (version == "1.2")


FAKE_SYSTEMCTL = """\
#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
if [ "$1" = restart ] && [ -n "${SYSTEMCTL_FAIL_RESTART:-}" ]; then exit 1; fi
exit 0
"""

#: Runs "$@" (a maintainer script) with a private, empty /run that claims a running systemd,
#: then prints the exit code and the reboot-request files.
SANDBOX = """\
set -u
mount -t tmpfs kallikratis-test-run /run
mkdir -p /run/systemd/system
for arg in configure configure; do "$@" "$arg"; echo "rc=$?"; done
for f in /run/reboot-required /run/reboot-required.pkgs; do
    [ -e "$f" ] && echo "$f:" && cat "$f"
done
exit 0
"""


def _run_maintainer_script(
    script: Path, tmp_path: Path, *, fail_restart: bool = False
) -> tuple[str, list[str]]:
    """Run `script configure` twice in a mount namespace (the host's /run stays untouched),
    systemctl faked; return the sandbox's report and the systemctl calls."""
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir(exist_ok=True)
    (fakebin / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fakebin / "systemctl").chmod(0o755)
    log = tmp_path / "systemctl.log"
    log.write_text("")
    env = {
        **os.environ,
        "PATH": f"{fakebin}:{os.environ['PATH']}",
        "SYSTEMCTL_LOG": str(log),
        "SYSTEMCTL_FAIL_RESTART": "1" if fail_restart else "",
    }
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "sh", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, log.read_text().splitlines()


@pytest.mark.parametrize("version", VERSIONS)
def test_postinst_configure_runs(repo: AptRepo, version: str, tmp_path: Path) -> None:
    postinst = _control_dir(repo.deb(version), tmp_path / "DEBIAN") / "postinst"
    report, calls = _run_maintainer_script(postinst, tmp_path)
    assert report.count("rc=0") == 2, report
    assert calls[:4] == [
        "daemon-reload",
        f"enable {SERVICE}",
        f"reset-failed {SERVICE}",
        f"restart {SERVICE}",
    ]
    if version == "1.1":  # the flag, and the package named once although configured twice
        assert "/run/reboot-required:\n/run/reboot-required.pkgs:\nkallikratis-probe\n" in report
    else:
        assert "reboot-required" not in report


@pytest.mark.parametrize("version", VERSIONS)
def test_postinst_when_the_restart_fails(repo: AptRepo, version: str, tmp_path: Path) -> None:
    """Only the broken 1.2 "succeeds" anyway; a good version failing to start is an error."""
    postinst = _control_dir(repo.deb(version), tmp_path / "DEBIAN") / "postinst"
    report, _ = _run_maintainer_script(postinst, tmp_path, fail_restart=True)
    expected = "rc=0" if version == "1.2" else "rc=1"
    assert report.count(expected) == 2, report


def test_prerm_stops_and_disables_on_remove_only(repo: AptRepo, tmp_path: Path) -> None:
    prerm = _control_dir(repo.deb("1.0"), tmp_path / "DEBIAN") / "prerm"
    script = tmp_path / "prerm-remove"
    script.write_text(f"#!/bin/sh\nexec {prerm} remove\n")
    script.chmod(0o755)
    _, calls = _run_maintainer_script(script, tmp_path)
    assert calls == [f"stop {SERVICE}", f"disable {SERVICE}"] * 2
    script.write_text(f"#!/bin/sh\nexec {prerm} upgrade 1.1\n")
    _, calls = _run_maintainer_script(script, tmp_path)
    assert calls == []  # an upgrade restarts in the new postinst instead


def test_debs_are_reproducible(repo: AptRepo, tmp_path: Path) -> None:
    again = AptRepo(tmp_path / "again")
    again.build()
    repo.build()  # idempotent
    for version in VERSIONS:
        assert repo.deb(version).read_bytes() == again.deb(version).read_bytes(), version
    assert repo.public_key != again.public_key  # a throwaway key each


def test_unit_passes_systemd_analyze_verify(repo: AptRepo, tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package systemd"
    tree = _extract(repo.deb("1.0"), tmp_path / "tree")
    unit = (tree / SERVICE_PATH).read_text()
    for line in ("Restart=on-failure", "StartLimitBurst=", "WantedBy=multi-user.target"):
        assert line in unit
    # verify needs the program on the host: point ExecStart at the extracted one
    units = tmp_path / "units"
    units.mkdir()
    (units / SERVICE).write_text(unit.replace(f"={PROBE_PROGRAM}", f"={tree}{PROBE_PROGRAM}"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(units / SERVICE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert PACKAGE not in done.stderr, done.stderr


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_good_probe_writes_its_version_and_stays_up(
    repo: AptRepo, version: str, tmp_path: Path
) -> None:
    tree = _extract(repo.deb(version), tmp_path / "tree")
    run_dir = tmp_path / "run"
    env = {**os.environ, "RUNTIME_DIRECTORY": str(run_dir)}
    proc = subprocess.Popen([str(tree / PROBE_PROGRAM.lstrip("/"))], env=env)
    try:
        deadline = time.monotonic() + 10
        while not (run_dir / "version").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / "version").read_text() == f"{version}\n"
        time.sleep(0.3)
        assert proc.poll() is None, "the probe must keep running"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_broken_probe_exits_non_zero_at_once(repo: AptRepo, tmp_path: Path) -> None:
    tree = _extract(repo.deb("1.2"), tmp_path / "tree")
    env = {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")}
    done = subprocess.run(
        [str(tree / PROBE_PROGRAM.lstrip("/"))], env=env, capture_output=True, timeout=10
    )
    assert done.returncode != 0
    assert not (tmp_path / "run" / "version").exists()


# -- the index, through the real apt ------------------------------------------------------------


def test_apt_verifies_signed_by_and_follows_publish(
    repo: AptRepo, served: str, tmp_path: Path
) -> None:
    entry = repo.source_entry(served)
    apt = Apt(tmp_path / "apt", entry)
    _ok(apt.update())
    assert apt.versions() == ["1.0", "1.1"]
    assert apt.candidate() == "1.1"
    _ok(apt.run("apt-get", "-q", "download", f"{PACKAGE}=1.1"))
    fetched = apt.root / "download" / f"{PACKAGE}_1.1_all.deb"
    assert fetched.read_bytes() == repo.deb("1.1").read_bytes()

    repo.publish(["1.0", "1.1", "1.2"])  # within a second of the last update: no 304 allowed
    _ok(apt.update())
    assert apt.versions() == ["1.0", "1.1", "1.2"]
    assert apt.candidate() == "1.2"

    repo.publish(["1.0"])
    _ok(apt.update())
    assert apt.candidate() == "1.0"


def test_release_fields(repo: AptRepo) -> None:
    repo.publish(["1.0"])
    release = (repo.dists / "Release").read_text()
    for line in RELEASE_LINES:
        assert f"\n{line}" in f"\n{release}", line
    packages = (repo.dists / "main/binary-amd64/Packages").read_bytes()
    assert f" {hashlib.sha256(packages).hexdigest()} " in release
    assert "Version: 1.0\n" in packages.decode() and "Version: 1.1" not in packages.decode()
    inrelease = (repo.dists / "InRelease").read_text()
    assert inrelease.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert release in inrelease
    assert (repo.dists / "Release.gpg").read_text().startswith("-----BEGIN PGP SIGNATURE-----")


def test_apt_without_the_key_refuses(repo: AptRepo, served: str, tmp_path: Path) -> None:
    other = AptRepo(tmp_path / "other")
    other.build()
    entry = {**repo.source_entry(served), "signed_by": other.public_key}
    apt = Apt(tmp_path / "apt", entry)
    out = apt.update()
    assert out.returncode != 0
    assert "NO_PUBKEY" in out.stdout + out.stderr, out.stdout + out.stderr
    assert apt.candidate() == "(none)"


def test_apt_rejects_a_tampered_packages_file(repo: AptRepo, served: str, tmp_path: Path) -> None:
    apt = Apt(tmp_path / "apt", repo.source_entry(served))
    _ok(apt.update())
    repo.publish(["1.0", "1.1", "1.2"])  # a new InRelease, then its indexes forged
    forged = 0
    for index in (repo.dists / "main").rglob("*"):
        if index.is_file():
            data = index.read_bytes()
            packed = data[:2] == b"\x1f\x8b"
            plain = gzip.decompress(data) if packed else data
            if b"Version: 1.2" in plain:
                plain = plain.replace(b"Version: 1.2", b"Version: 9.9")
                index.write_bytes(gzip.compress(plain, mtime=0) if packed else plain)
                forged += 1
    assert forged == 8  # Packages and Packages.gz, by name and by hash, in binary-{amd64,all}
    fresh = Apt(tmp_path / "fresh", repo.source_entry(served))
    for client in (apt, fresh):
        out = client.update()
        text = out.stdout + out.stderr
        assert out.returncode != 0, text
        assert "Hash Sum mismatch" in text or "unexpected size" in text, text
        assert "9.9" not in client.versions()


def test_apt_rejects_a_tampered_inrelease(repo: AptRepo, served: str, tmp_path: Path) -> None:
    inrelease = repo.dists / "InRelease"
    inrelease.write_text(inrelease.read_text().replace("Label: Kallikratis", "Label: Forged"))
    apt = Apt(tmp_path / "apt", repo.source_entry(served))
    out = apt.update()
    assert out.returncode != 0
    assert "BADSIG" in out.stdout + out.stderr or "not signed" in out.stdout + out.stderr
    assert apt.candidate() == "(none)"


def test_publish_keeps_the_previous_index_resolvable(repo: AptRepo) -> None:
    """A client holding the old InRelease still finds every index it names (by hash)."""
    repo.publish(["1.0"])
    old = (repo.dists / "Release").read_text()
    repo.publish(["1.0", "1.1", "1.2"])
    assert (repo.dists / "Release").read_text() != old
    sha256 = old.split("SHA256:\n", 1)[1]
    entries = re.findall(r"^ ([0-9a-f]{64}) +\d+ (\S+)$", sha256, re.MULTILINE)
    assert len(entries) == 4
    for digest, rel in entries:
        by_hash = repo.dists / Path(rel).parent / "by-hash" / "SHA256" / digest
        assert hashlib.sha256(by_hash.read_bytes()).hexdigest() == digest
    assert "Acquire-By-Hash: yes" in old
    assert not list(repo.dists.rglob(".*.tmp"))


def test_release_dates_increase_and_lie_in_the_past(repo: AptRepo) -> None:
    dates = []
    for _ in range(3):
        repo.publish(["1.0"])
        release = (repo.dists / "Release").read_text()
        match = re.search(r"^Date: (.+)$", release, re.MULTILINE)
        assert match
        dates.append(match.group(1))
    stamps = [time.mktime(time.strptime(d, "%a, %d %b %Y %H:%M:%S GMT")) for d in dates]
    assert stamps == sorted(set(stamps))
    assert stamps[-1] < time.mktime(time.gmtime()) - 60


def test_publish_refuses_unknown_versions(repo: AptRepo) -> None:
    with pytest.raises(ValueError, match="2.0"):
        repo.publish(["1.0", "2.0"])


# -- HTTP and the inventory entry ---------------------------------------------------------------


def test_serve_binds_only_the_given_address_and_stops(
    repo: AptRepo, capfd: pytest.CaptureFixture[str]
) -> None:
    repo.publish(["1.0"])
    with repo.serve("127.0.0.1", 0) as url:
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/", url)
        assert match, url
        port = int(match.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /dists/kallikratis/InRelease HTTP/1.0\r\n\r\n")
            answer = _read_all(conn)
        assert answer.startswith(b"HTTP/1.0 200") and b"BEGIN PGP SIGNED MESSAGE" in answer
        with pytest.raises(OSError):  # also loopback, but not the address we bound
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /../private/signing-key.asc HTTP/1.0\r\n\r\n")
            assert b"PRIVATE KEY" not in _read_all(conn)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert "GET /" not in capfd.readouterr().err  # quiet by default


def test_source_entry_shape(repo: AptRepo) -> None:
    entry = repo.source_entry("http://10.77.0.1:8080/")
    assert entry == {
        "name": "kallikratis-test",
        "uris": ["http://10.77.0.1:8080/"],
        "suites": ["kallikratis"],
        "components": ["main"],
        "signed_by": repo.public_key,
    }
    key = entry["signed_by"]
    assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert key.rstrip().endswith("-----END PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in key


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)

"""The archive's way into another VM, with real borg: `borg export-tar` (the passphrase on
stdin only, as on control) piped by the controller into `tar -x` (as on the target VM), the
dumps found where borgmatic puts them, the expected content read from them and from `borg list
--json-lines`. Both ends run here as shell scripts, exactly the scripts sent over SSH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from kallikratis import model, restoreinto
from kallikratis.guest import GuestError
from support import DATA

BORG = shutil.which("borg")
PASSPHRASE = "correct horse battery staple, Ηράκλειο"
ARCHIVE = "hersonissos-2026-12-01T02:00:04"
UPLOAD = "var/lib/wordpress/wp-content/uploads/2026/12/kk-upload.txt"


@pytest.fixture(autouse=True)
def _borg_and_root() -> None:
    """Installed by scripts/lab install (scripts/system-packages.txt): missing is a failure."""
    assert BORG, "install the Debian package borgbackup"
    assert os.geteuid() == 0, "the unit tests run as root"


def _borg(home: Path, *args: str, cwd: Path | None = None) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "BORG_PASSPHRASE_FD": "0"}
    subprocess.run(
        [BORG or "borg", *args],
        input=PASSPHRASE + "\n",
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        check=True,
    )


def _archive(tmp_path: Path, layout: str = "borgmatic") -> Path:
    """A repository like control's with one archive laid out as borgmatic 1.9 (or 1.7) makes
    it; returns the store's home (the repository is <home>/hersonissos)."""
    src = tmp_path / "src"
    files = {
        "etc/kallikratis/metrics.json": '{"slug": "hersonissos"}\n',
        UPLOAD: "uploaded before the backup\n",
        "var/lib/kolibri/options.ini": "[Deployment]\n",
        f"{layout}/mariadb_databases/localhost/wordpress": (
            DATA / "restore" / "wordpress.sql"
        ).read_text(),
        f"{layout}/sqlite_databases/localhost/kolibri": (
            DATA / "restore" / "kolibri.sql"
        ).read_text(),
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    home = tmp_path / "store"
    home.mkdir()
    _borg(home, "init", "--encryption", "repokey-blake2", str(home / "hersonissos"))
    top = sorted({rel.split("/")[0] for rel in files})
    _borg(home, "create", f"{home}/hersonissos::{ARCHIVE}", *top, cwd=src)
    return home


def _sh(script: str) -> list[str]:
    return ["sh", "-euc", script]


def _relay(home: Path, staging: Path, passphrase: str = PASSPHRASE) -> None:
    restoreinto.relay(
        _sh(restoreinto.export_script("hersonissos", ARCHIVE, user="root", home=str(home))),
        passphrase + "\n",
        _sh(restoreinto.receive_script(str(staging))),
        timeout=120,
    )


def test_the_archive_streams_into_the_target_and_the_dumps_are_found(
    tmp_path: Path, test_fleet: model.Fleet
) -> None:
    home = _archive(tmp_path)
    staging = tmp_path / "vm" / "staging"
    (staging).mkdir(parents=True)
    (staging / "stale").write_text("from an earlier, interrupted run\n")
    _relay(home, staging)
    assert (staging / UPLOAD).read_text() == "uploaded before the backup\n"
    assert not (staging / "stale").exists()
    assert oct(staging.stat().st_mode & 0o777) == "0o700"
    m = test_fleet.get("hersonissos")
    located = subprocess.run(
        _sh(restoreinto.locate_script(m, str(staging))), capture_output=True, text=True, check=True
    )
    dumps = restoreinto.parse_located(located.stdout)
    assert dumps.wordpress == f"{staging}/borgmatic/mariadb_databases/localhost/wordpress"
    assert dumps.kolibri == f"{staging}/borgmatic/sqlite_databases/localhost/kolibri"


def test_borgmatic_17s_layout_is_found_too(tmp_path: Path, test_fleet: model.Fleet) -> None:
    home = _archive(tmp_path, layout="root/.borgmatic")
    staging = tmp_path / "staging"
    _relay(home, staging)
    m = test_fleet.get("hersonissos")
    out = subprocess.run(
        _sh(restoreinto.locate_script(m, str(staging))), capture_output=True, text=True, check=True
    ).stdout
    assert restoreinto.parse_located(out).wordpress.endswith(
        "root/.borgmatic/mariadb_databases/localhost/wordpress"
    )


def test_an_archive_without_the_dumps_fails_clearly(
    tmp_path: Path, test_fleet: model.Fleet
) -> None:
    home = _archive(tmp_path, layout="elsewhere")
    staging = tmp_path / "staging"
    _relay(home, staging)
    m = test_fleet.get("hersonissos")
    done = subprocess.run(
        _sh(restoreinto.locate_script(m, str(staging))), capture_output=True, text=True
    )
    assert done.returncode == 3
    assert "the archive has no mariadb_databases dump of wordpress" in done.stderr


def test_the_uploads_expected_come_from_borg_list(tmp_path: Path) -> None:
    home = _archive(tmp_path)
    done = subprocess.run(
        _sh(restoreinto.list_script("hersonissos", ARCHIVE, user="root", home=str(home))),
        input=PASSPHRASE + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    from kallikratis import restorecontent

    assert restorecontent.from_file_list(done.stdout, restoreinto.UPLOADS_PATH) == {
        "2026/12/kk-upload.txt": len("uploaded before the backup\n")
    }


def test_a_wrong_passphrase_fails_at_control_and_names_borg(tmp_path: Path) -> None:
    home = _archive(tmp_path)
    with pytest.raises(GuestError, match="borg export-tar on control: exit 2: .*passphrase"):
        _relay(home, tmp_path / "staging", passphrase="not the passphrase")


def test_a_failing_target_fails_the_relay(tmp_path: Path) -> None:
    home = _archive(tmp_path)
    with pytest.raises(GuestError, match="tar on the target VM: exit 3: full"):
        restoreinto.relay(
            _sh(restoreinto.export_script("hersonissos", ARCHIVE, user="root", home=str(home))),
            PASSPHRASE + "\n",
            _sh("head -c 100 >/dev/null; echo full >&2; exit 3"),
            timeout=120,
        )


def test_the_passphrase_is_in_no_script() -> None:
    for script in (
        restoreinto.export_script("hersonissos", ARCHIVE),
        restoreinto.list_script("hersonissos", ARCHIVE),
    ):
        assert "BORG_PASSPHRASE_FD=0" in script and "runuser -u borg" in script
        assert " 2>&1" not in script  # stdout is data: borg's messages stay apart

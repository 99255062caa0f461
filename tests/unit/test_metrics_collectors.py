"""The metrics role's textfile collectors (roles/metrics/files/...), run on sample inputs: apt's
simulated upgrade, an nginx access log (rotation and truncation included), WordPress-shaped,
Datasette and Kolibri SQLite databases. Every file they write is parsed by the real Prometheus
text-format parser (`promtool check metrics` reads stdin)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

LIB = Path(__file__).resolve().parents[2] / "roles/metrics/files/usr/local/lib/kallikratis-metrics"
sys.path.insert(0, str(LIB))

import collect  # noqa: E402
import system  # noqa: E402
import textfile  # noqa: E402
import usage  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NOW = 1_790_000_000.0

APT_SIMULATION = (
    """\
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Inst libssl3t64 [3.5.1-1] (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
Inst openssl [3.5.1-1] (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
Inst nginx-common [1.26.3-3] (1.26.3-3+deb13u1 Debian:13.1/stable [all])
Inst tzdata [2025b-4] (2025b-4+deb13u1 Debian:13.1/stable-updates, Kallikratis:lab [all])
Conf libssl3t64 (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
Conf openssl (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
"""
    + (
        # two origins, and the trailing " []" Debian 12's apt prints after some lines
        "Inst libgcrypt20 [1.11.0-7] (1.11.0-7+deb13u1 Debian:13.1/stable, "
        "Debian-Security:13/stable-security [amd64]) []\n"
    )
)

LOG_LINE = (
    '10.0.0.{n} - - [01/Dec/2026:10:00:00 +0200] "GET {path} HTTP/1.1" 200 512 "-" "curl/8"\n'
)


def promtool_parses(text: str) -> None:
    """The real text-format parser accepts TEXT (lint problems are reported, not fatal)."""
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert "error while linting" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "text format parsing error" not in proc.stdout + proc.stderr, proc.stderr
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert not problems, problems


def values(text: str) -> dict[str, float]:
    """Sample line -> value of a text-format document."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_promtool_rejects_a_broken_document() -> None:
    with pytest.raises(AssertionError):
        promtool_parses('kallikratis_datasets{x="unterminated} 1\n')


def test_apt_simulation_counts_security_upgrades() -> None:
    assert system.parse_simulated_upgrade(APT_SIMULATION) == (5, 3)
    assert system.parse_simulated_upgrade("Reading package lists...\n") == (0, 0)


def test_security_since_is_kept_until_none_pending(tmp_path: Path) -> None:
    state: dict[str, Any] = {}
    reboot = tmp_path / "reboot-required"
    first = dict((s[0], s[2]) for s in system.updates(APT_SIMULATION, state, NOW, reboot))
    assert first["kallikratis_security_upgrades_pending_since_timestamp_seconds"] == int(NOW)
    assert first["kallikratis_reboot_required_since_timestamp_seconds"] == 0
    reboot.touch()
    os.utime(reboot, (NOW - 50, NOW - 50))
    later = dict((s[0], s[2]) for s in system.updates(APT_SIMULATION, state, NOW + 900, reboot))
    assert later["kallikratis_security_upgrades_pending_since_timestamp_seconds"] == int(NOW)
    assert later["kallikratis_reboot_required_since_timestamp_seconds"] == int(NOW - 50)
    done = dict((s[0], s[2]) for s in system.updates("", state, NOW + 1800, reboot))
    assert done["kallikratis_security_upgrades_pending"] == 0
    assert done["kallikratis_security_upgrades_pending_since_timestamp_seconds"] == 0


def test_maintenance_flag(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance"
    assert [s[2] for s in system.maintenance(flag)] == [0, 0]
    flag.touch()
    os.utime(flag, (NOW, NOW))
    assert [s[2] for s in system.maintenance(flag)] == [1, int(NOW)]


def _log(path: Path, *paths: str) -> None:
    with path.open("a") as fh:
        for n, p in enumerate(paths):
            fh.write(LOG_LINE.format(n=n, path=p))


def _requests(log: Path, modules: set[str], state: dict[str, Any]) -> dict[str, float]:
    return {s[1]["module"]: s[2] for s in usage.requests(log, modules, state)}


def test_requests_per_module_survive_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    mods = {"portal", "opendata", "education"}
    state: dict[str, Any] = {}
    _log(
        log, "/", "/?p=1", "/data/", "/data/opendata/budget_lines?sql=x", "/learn/", "/wp-login.php"
    )
    first = _requests(log, mods, state)
    assert first == {"portal": 3, "opendata": 2, "education": 1, "other": 0}
    # half a line (nginx mid-write) is left for the next run
    with log.open("a") as fh:
        fh.write('10.0.0.9 - - [01/Dec/2026:10:00:01 +0200] "GET /data/ HT')
    assert _requests(log, mods, state) == first
    with log.open("a") as fh:
        fh.write('TP/1.1" 200 1 "-" "x"\n')
    assert _requests(log, mods, state)["opendata"] == 3
    # logrotate: the old file is renamed (and gets a last line), a new one starts
    log.rename(tmp_path / "access.log.1")
    _log(tmp_path / "access.log.1", "/learn/")
    _log(log, "/", "/data/")
    after = _requests(log, mods, state)
    assert after == {"portal": 4, "opendata": 4, "education": 2, "other": 0}
    # copytruncate: same inode, smaller file
    log.write_text("")
    _log(log, "/learn/x")
    assert _requests(log, mods, state)["education"] == 3
    # a garbled line counts as other; the counters never go down
    with log.open("a") as fh:
        fh.write("\x16\x03\x01 garbage\n")
    assert _requests(log, mods, state)["other"] == 1


def test_requests_of_a_module_that_is_off_count_elsewhere(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _log(log, "/", "/data/", "/learn/")
    got = _requests(log, {"opendata"}, {})
    assert got == {"opendata": 1, "other": 2}


def _wordpress(path: Path) -> usage.Query:
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE wp_posts (ID INTEGER PRIMARY KEY, post_type TEXT, post_status TEXT,
            post_parent INTEGER, comment_status TEXT, post_date_gmt TEXT, post_title TEXT);
        CREATE TABLE wp_comments (comment_ID INTEGER PRIMARY KEY, comment_post_ID INTEGER,
            comment_approved TEXT, comment_author_email TEXT);
        CREATE TABLE wp_postmeta (meta_id INTEGER PRIMARY KEY, post_id INTEGER, meta_key TEXT,
            meta_value TEXT);
        INSERT INTO wp_posts VALUES
            (1, 'post', 'publish', 0, 'closed', '2026-11-30 08:00:00', 'Welcome'),
            (2, 'post', 'publish', 0, 'open', '2026-12-01 09:30:00', 'News'),
            (3, 'post', 'draft', 0, 'open', '2026-12-01 10:00:00', 'Draft'),
            (10, 'consultation', 'publish', 0, 'open', '2026-11-01 00:00:00', 'Open one'),
            (11, 'consultation', 'publish', 10, 'open', '2026-11-01 00:00:00', 'Article 1'),
            (12, 'consultation', 'publish', 10, 'open', '2026-11-01 00:00:00', 'Article 2'),
            (20, 'consultation', 'publish', 0, 'closed', '2026-10-01 00:00:00', 'Closed one'),
            (30, 'consultation', 'publish', 0, 'open', '2026-10-01 00:00:00', 'Past deadline'),
            (40, 'consultation', 'publish', 0, 'open', '2026-10-01 00:00:00', 'Until 2099');
        -- the portal's deadline (local time): past = closed whatever comment_status still says
        INSERT INTO wp_postmeta VALUES (1, 30, 'kallikratis_deadline', '2020-01-31 23:59'),
            (2, 40, 'kallikratis_deadline', '2099-01-31 23:59'), (3, 40, 'other', 'x');
        INSERT INTO wp_comments VALUES
            (1, 11, '1', 'a@example.org'), (2, 12, '1', 'b@example.org'),
            (3, 12, '0', 'spam@example.org'), (4, 2, '1', 'c@example.org');
        """
    )
    db.commit()

    def query(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in db.execute(sql)]

    return query


def test_portal_counts_posts_consultations_and_comments(tmp_path: Path) -> None:
    got = {(s[0], s[1].get("state")): s[2] for s in usage.portal(_wordpress(tmp_path / "wp.db"))}
    assert got == {
        ("kallikratis_portal_posts_published", None): 2,
        ("kallikratis_portal_last_post_timestamp_seconds", None): 1_796_117_400.0,
        ("kallikratis_consultations", "open"): 2,
        ("kallikratis_consultations", "closed"): 2,
        ("kallikratis_consultation_comments", None): 2,
    }


def _opendata(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            CREATE TABLE budget_lines (code TEXT, amount REAL);
            CREATE TABLE "council decisions" (number INTEGER, subject TEXT);
            CREATE VIRTUAL TABLE budget_lines_fts USING fts5(code);
            INSERT INTO budget_lines VALUES ('10-6011', 1000.0), ('10-6012', 20.5);
            INSERT INTO "council decisions" VALUES (1, 'a'), (2, 'b'), (3, 'c');
            INSERT INTO budget_lines_fts VALUES ('x');
            """
        )
        db.commit()


def test_opendata_counts_tables_and_rows(tmp_path: Path) -> None:
    _opendata(tmp_path / "opendata.db")
    got = {s[0]: s[2] for s in usage.opendata(tmp_path / "opendata.db")}
    assert got == {"kallikratis_datasets": 2, "kallikratis_dataset_rows": 5}
    with pytest.raises(FileNotFoundError):
        usage.opendata(tmp_path / "missing.db")


def _kolibri(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            CREATE TABLE kolibriauth_facilityuser (id TEXT PRIMARY KEY, username TEXT);
            CREATE TABLE kolibriauth_role (id TEXT PRIMARY KEY, user_id TEXT, kind TEXT);
            CREATE TABLE logger_usersessionlog (id TEXT PRIMARY KEY, user_id TEXT);
            INSERT INTO kolibriauth_facilityuser VALUES ('a', 'admin'), ('c', 'coach'),
                ('l1', 'learner1'), ('l2', 'learner2'), ('l3', 'learner3');
            INSERT INTO kolibriauth_role VALUES ('r1', 'a', 'admin'), ('r2', 'c', 'coach'),
                ('r3', 'a', 'coach');
            INSERT INTO logger_usersessionlog VALUES ('s1', 'l1'), ('s2', 'l1'), ('s3', 'l2');
            """
        )
        db.commit()


def test_education_counts_learners_and_sessions(tmp_path: Path) -> None:
    _kolibri(tmp_path / "db.sqlite3")
    got = {s[0]: s[2] for s in usage.education(tmp_path / "db.sqlite3")}
    assert got == {"kallikratis_kolibri_learners": 3, "kallikratis_kolibri_sessions": 3}


def _config(tmp_path: Path, modules: list[str]) -> Path:
    venvs = tmp_path / "venvs"
    for venv, dist in (("datasette", "datasette-0.65.1"), ("kolibri", "kolibri-0.19.2")):
        site = venvs / venv / "lib/python3.13/site-packages"
        (site / f"{dist}.dist-info").mkdir(parents=True)
        (site / "click-8.1.8.dist-info").mkdir()
    wp = tmp_path / "version.php"
    wp.write_text("<?php\n$wp_version = '6.8.1';\n$wp_db_version = 58975;\n")
    (tmp_path / "image-version").write_text('debian13-2026.12.01 "x\\y"\n')
    (tmp_path / "textfile").mkdir()
    _opendata(tmp_path / "opendata.db")
    _log(tmp_path / "access.log", "/", "/data/")
    cfg = {
        "modules": modules,
        "textfile_dir": str(tmp_path / "textfile"),
        "state_dir": str(tmp_path),
        "maintenance_flag": str(tmp_path / "maintenance"),
        "image_version_file": str(tmp_path / "image-version"),
        "reboot_required_flag": str(tmp_path / "reboot-required"),
        "nginx_access_log": str(tmp_path / "access.log"),
        "portal_database": "wordpress",
        "portal_table_prefix": "wp_",
        "wordpress_version_php": str(wp),
        "opendata_venv": str(venvs / "datasette"),
        "opendata_database": str(tmp_path / "opendata.db"),
        "education_venv": str(venvs / "kolibri"),
        "education_database": str(tmp_path / "no-kolibri.sqlite3"),
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(cfg))
    return path


def test_collectors_write_parseable_files_and_nothing_for_modules_that_are_off(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, ["opendata"])
    out = tmp_path / "textfile"
    (out / "kallikratis_portal.prom").write_text("kallikratis_portal_posts_published 9\n")
    names = ["maintenance", "versions", "requests", "portal", "opendata", "education"]
    assert collect.main(["--config", str(config), *names]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        f"kallikratis_{n}.prom" for n in sorted(["maintenance", "opendata", "requests", "versions"])
    ]
    for name in written:  # node exporter merges the files' families; promtool reads one
        promtool_parses((out / name).read_text())
    text = "".join((out / name).read_text() for name in written)
    got = values(text)
    assert got["kallikratis_datasets"] == 2
    assert got['kallikratis_http_requests_total{module="opendata"}'] == 1
    assert got['kallikratis_http_requests_total{module="other"}'] == 1
    assert got['kallikratis_version_info{component="datasette",version="0.65.1"}'] == 1
    assert 'kallikratis_version_info{component="image",version="debian13-2026.12.01"}' in got
    assert not [k for k in got if "wordpress" in k or "kolibri" in k]
    assert got['kallikratis_collector_success{collector="opendata"}'] == 1
    assert not list(out.glob(".*")), "a temporary file was left behind"


def test_a_failing_collector_reports_success_zero(tmp_path: Path) -> None:
    config = _config(tmp_path, ["portal", "education"])
    assert collect.main(["--config", str(config), "education", "versions"]) == 1
    text = (tmp_path / "textfile" / "kallikratis_education.prom").read_text()
    promtool_parses(text)
    got = values(text)
    assert got['kallikratis_collector_success{collector="education"}'] == 0
    assert "kallikratis_kolibri_learners" not in text
    versions = values((tmp_path / "textfile" / "kallikratis_versions.prom").read_text())
    assert versions['kallikratis_version_info{component="wordpress",version="6.8.1"}'] == 1
    assert versions['kallikratis_version_info{component="kolibri",version="0.19.2"}'] == 1


def test_label_values_are_escaped() -> None:
    text = textfile.render(
        collect.FAMILIES,
        [("kallikratis_version_info", {"component": "image", "version": 'a"b\\c\nd'}, 1)],
    )
    promtool_parses(text)
    assert 'version="a\\"b\\\\c\\nd"' in text
    with pytest.raises(ValueError, match="HELP/TYPE"):
        textfile.render(collect.FAMILIES, [("unknown_metric", {}, 1)])


def test_collect_runs_as_the_unit_runs_it(tmp_path: Path) -> None:
    """Debian's python3 running the installed script (as the systemd unit does)."""
    config = _config(tmp_path, [])
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable
    proc = subprocess.run(
        [python, str(LIB / "collect.py"), "--config", str(config), "maintenance", "requests"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    requests = (tmp_path / "textfile" / "kallikratis_requests.prom").read_text()
    promtool_parses(requests)
    assert values(requests)['kallikratis_http_requests_total{module="other"}'] == 2
    bad = subprocess.run(
        [python, str(LIB / "collect.py"), "--config", str(config), "bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr

"""roles/opendata's Datasette unit, run for real on 127.0.0.1: the settings it passes are ones
Datasette accepts, and an arbitrary SQL query that would run for ever (a recursive CTE) is cut
at sql_time_limit_ms; rows are capped at max_returned_rows.

Datasette comes from the test extras (setup.cfg) or KALLIKRATIS_TEST_DATASETTE (a datasette
executable); without one the test fails, naming the missing install (never a silent skip).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

UNIT = (
    Path(__file__).resolve().parents[2]
    / "roles/opendata/templates/etc/systemd/system/datasette.service.j2"
)
DATASETTE = os.environ.get("KALLIKRATIS_TEST_DATASETTE") or shutil.which(
    "datasette", path=str(Path(sys.executable).parent)
)
LIMIT_MS = 300


@pytest.fixture(autouse=True)
def _datasette_installed() -> None:
    if DATASETTE is None:
        pytest.fail("datasette is not installed: `pip install -e .[test]` (setup.cfg) brings it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exec_start(home: Path, port: int) -> list[str]:
    """ExecStart of the rendered unit, with the test's datasette and directory."""
    values = {
        "ansible_managed": "unit test",
        "opendata_display_name": "Δήμος",
        "opendata_venv": str(Path(str(DATASETTE)).parent.parent),
        "opendata_home": str(home),
        "opendata_database": "opendata",
        "opendata_listen_address": "127.0.0.1",
        "opendata_port": port,
        "opendata_url_path": "/data/",
        "opendata_sql_time_limit_ms": LIMIT_MS,
        "opendata_max_returned_rows": 50,
        "opendata_num_sql_threads": 2,
    }
    templar = Templar(loader=DataLoader(), variables=values)  # Ansible's own templating
    text = str(templar.template(trust_as_template(UNIT.read_text()), escape_backslashes=False))
    line = text.split("ExecStart=", 1)[1].split("\nRestart=", 1)[0].replace("\\\n", " ")
    argv = shlex.split(line)
    argv[0] = str(DATASETTE)
    return argv


@contextlib.contextmanager
def serving(tmp_path: Path) -> Iterator[str]:
    db = sqlite3.connect(tmp_path / "opendata.db")
    db.execute("create table numbers (n integer)")
    db.executemany("insert into numbers values (?)", [(i,) for i in range(200)])
    db.commit()
    db.close()
    (tmp_path / "metadata.json").write_text("{}")
    port = _free_port()
    proc = subprocess.Popen(
        exec_start(tmp_path, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "datasette did not listen"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/data/"
    finally:
        proc.terminate()
        proc.wait(10)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as res:  # noqa: S310 - loopback
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_settings_are_accepted_and_a_runaway_query_is_cut(tmp_path: Path) -> None:
    with serving(tmp_path) as base:
        status, settings = get(base + "-/settings.json")
        assert status == 200
        assert settings["sql_time_limit_ms"] == LIMIT_MS
        assert settings["max_returned_rows"] == 50
        assert settings["num_sql_threads"] == 2
        forever = (
            "with recursive c(x) as (select 1 union all select x + 1 from c) select max(x) from c"
        )
        started = time.monotonic()
        status, body = get(base + "opendata.json?" + urllib.parse.urlencode({"sql": forever}))
        took = time.monotonic() - started
        assert status == 400, body
        assert "took too long" in json.dumps(body)
        assert took < 5, f"the query ran {took:.1f} s"
        status, body = get(base + "opendata.json?sql=select+n+from+numbers&_shape=array")
        assert status == 200 and len(body) == 50, "max_returned_rows caps the rows"

"""Open data (Datasette at /data/): present and serving every dataset where the municipality's
modules include opendata; gone (service, listener, nginx location) where they don't.

No check is ever skipped: each one asserts the "on" or the "off" state of the module.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_data import csv_rows, https_get, listeners, load_spec, shows_name

DATABASE = "opendata"  # roles/opendata: opendata_database
CSV_DIR = "/var/lib/opendata/csv"  # roles/opendata: opendata_home/csv
PORT = 8001


@pytest.fixture
def municipality(host: Any) -> dict[str, Any]:
    return load_spec(host)


def enabled(m: dict[str, Any]) -> bool:
    return "opendata" in m["modules"]


def deployed_datasets(host: Any) -> dict[str, list[dict[str, str]]]:
    """The CSVs deployed from the inventory, by table name, with their rows."""
    directory = host.file(CSV_DIR)
    assert directory.is_directory, f"{CSV_DIR} is missing"
    names = sorted(n for n in directory.listdir() if n.endswith(".csv"))
    assert names, f"no CSV in {CSV_DIR}"
    return {n[:-4]: csv_rows(host.file(f"{CSV_DIR}/{n}").content_string) for n in names}


def test_datasette_service(host: Any, municipality: dict[str, Any]) -> None:
    service = host.service("datasette")
    if enabled(municipality):
        assert service.is_running, "datasette is not running"
        assert service.is_enabled, "datasette is not enabled at boot"
    else:
        assert not service.is_running, "datasette runs although opendata is off"
        assert not host.file("/etc/systemd/system/datasette.service").exists
        assert not host.file("/etc/nginx/kallikratis.d/opendata.conf").exists
        assert not host.file(CSV_DIR).exists, "open data left behind"


def test_datasette_listens_only_on_loopback(host: Any, municipality: dict[str, Any]) -> None:
    expected = [f"tcp://127.0.0.1:{PORT}"] if enabled(municipality) else []
    assert listeners(host, PORT) == expected


def test_datasets_published_over_https(host: Any, municipality: dict[str, Any]) -> None:
    if not enabled(municipality):
        assert https_get(municipality, "/data/").status == 404
        return
    datasets = deployed_datasets(host)
    info = https_get(municipality, f"/data/{DATABASE}.json")
    assert info.status == 200, f"/data/{DATABASE}.json: HTTP {info.status}"
    assert sorted(t["name"] for t in info.json()["tables"]) == sorted(datasets)
    for table, rows in datasets.items():
        resp = https_get(municipality, f"/data/{DATABASE}/{table}.json?_shape=array&_size=max")
        assert resp.status == 200, f"{table}: HTTP {resp.status}"
        published = resp.json()
        assert len(published) == len(rows), f"{table}: {len(published)} rows, CSV has {len(rows)}"
        assert set(published[0]) >= set(rows[0]), f"{table}: columns differ from the CSV"
        first = {k: str(v) for k, v in published[0].items() if k in rows[0]}
        assert first == rows[0], f"{table}: first row differs from the CSV"


def test_opendata_titles_in_greek(host: Any, municipality: dict[str, Any]) -> None:
    resp = https_get(municipality, "/data/")
    if not enabled(municipality):
        assert resp.status == 404
        return
    assert resp.status == 200
    assert shows_name(resp.body.decode("utf-8"), municipality["display_name"])

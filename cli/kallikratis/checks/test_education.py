"""Education (Kolibri at /learn/): answering where the municipality's modules include education;
absent (no service, no listener, /learn/ gives 404) where they don't.

No check is ever skipped: each one asserts the "on" or the "off" state of the module.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_data import https_get, https_get_following, listeners, load_spec

PORT = 8080


@pytest.fixture
def municipality(host: Any) -> dict[str, Any]:
    return load_spec(host)


def enabled(m: dict[str, Any]) -> bool:
    return "education" in m["modules"]


def test_kolibri_service(host: Any, municipality: dict[str, Any]) -> None:
    service = host.service("kolibri")
    if enabled(municipality):
        assert service.is_running, "kolibri is not running"
        assert service.is_enabled, "kolibri is not enabled at boot"
    else:
        assert not service.is_running, "kolibri runs although education is off"
        assert not host.file("/etc/systemd/system/kolibri.service").exists
        assert not host.file("/etc/nginx/kallikratis.d/education.conf").exists
        assert not host.file("/var/lib/kolibri").exists, "Kolibri data left behind"


def test_kolibri_listens_only_on_loopback(host: Any, municipality: dict[str, Any]) -> None:
    expected = [f"tcp://127.0.0.1:{PORT}"] if enabled(municipality) else []
    assert listeners(host, PORT) == expected


def test_kolibri_answers_at_learn(host: Any, municipality: dict[str, Any]) -> None:
    if not enabled(municipality):
        assert https_get(municipality, "/learn/").status == 404
        return
    final, page = https_get_following(municipality, "/learn/")
    assert page.status == 200, f"/learn/ ended at {final} with HTTP {page.status}"
    assert final.startswith("/learn/"), f"/learn/ left the prefix: {final}"
    info = https_get(municipality, "/learn/api/public/info/")
    assert info.status == 200, f"/learn/api/public/info/: HTTP {info.status}"
    assert info.json().get("application") == "kolibri"

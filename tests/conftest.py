"""Shared by every test suite: keep tests away from the real state directory and environment."""

from __future__ import annotations

import pytest

_ISOLATED_ENV = (
    "KALLIKRATIS_DOMAIN_TYPE",
    "KALLIKRATIS_INVENTORY",
    "KALLIKRATIS_VAULT_PASSWORD_FILE",
    "KALLIKRATIS_IMAGES_DIR",
)


@pytest.fixture(autouse=True)
def _isolated_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory
) -> None:
    """No unit test reads the caller's KALLIKRATIS_* settings or writes to /var/lib/kallikratis.

    End-to-end tests set up their own fleet, state directory and environment (tests/e2e).
    """
    if request.node.get_closest_marker("e2e"):
        return
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("kk-state")
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(home / "state"))
    monkeypatch.setenv("KALLIKRATIS_IMAGE_CACHE", str(home / "cache"))

"""Fixtures of the unit suite: inventory copies with one mutation, the libvirt test driver,
fixed SSH keys for golden files.

Golden files (tests/unit/golden/): the rendered documents are compared byte for byte.
After an intended template change, regenerate them with

    KALLIKRATIS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render.py

With the variable set, a golden test WRITES the current output and passes; without it, a missing
or different golden file fails the test. Review the diff of tests/unit/golden/ before committing.
Under CI (the CI variable set) the variable is refused: a golden test there fails loudly.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kallikratis import model
from kallikratis.hypervisor import LibvirtBackend, connect
from kallikratis.provision import Engine
from support import CRETE, InventoryCopy, install_fixed_client_key

from tests.helpers.promfixtures import PromFixtures


@pytest.fixture
def inv(tmp_path: Path) -> InventoryCopy:
    dest = tmp_path / "inventory"
    # not this machine's own secrets of the example inventory (the quick start writes them,
    # encrypted with the machine's vault password, not the tests')
    shutil.copytree(CRETE, dest, ignore=shutil.ignore_patterns("vault.yml"))
    copy = InventoryCopy(dest)
    # the municipalities' machinery is tested on the municipalities alone; tests of the
    # center's own VMs put the shipped `central` group back (InventoryCopy.add_central)
    copy.remove_central()
    return copy


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    install_fixed_client_key(state)
    return state


@pytest.fixture
def short_state(vault_password: Path) -> Iterator[Path]:
    """A state directory whose path is short enough for SSH control sockets (a unix socket's
    path has 108 bytes; pytest's tmp paths leave too few: there, verify does without)."""
    root = Path(tempfile.mkdtemp(prefix="kk-"))
    state = root / "s"
    install_fixed_client_key(state)
    yield state
    shutil.rmtree(root)


@pytest.fixture
def vault_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fixed vault password file; host keys are encrypted with it."""
    pw = tmp_path / "vault-password"
    pw.write_text("unit-test-vault-password\n")
    pw.chmod(0o600)
    monkeypatch.setenv("KALLIKRATIS_VAULT_PASSWORD_FILE", str(pw))
    return pw


@pytest.fixture
def make_engine(
    tmp_path: Path, state_dir: Path, vault_password: Path
) -> Iterator[Callable[[model.Fleet], Engine]]:
    """Engines of one test share state (keys), image cache and libvirt connections.

    Each connection to a file-based test-driver URI has its own private state, so engines of
    the same test must share the connection to see each other's domains.
    """
    connections: dict[str, LibvirtBackend] = {}

    def backend(uri: str) -> LibvirtBackend:
        if uri not in connections:
            connections[uri] = connect(uri)
        return connections[uri]

    def factory(fleet: model.Fleet) -> Engine:
        return Engine(
            fleet, state_dir=state_dir, image_cache=tmp_path / "cache", backend_factory=backend
        )

    yield factory
    for be in connections.values():
        be.close()


@pytest.fixture
def test_fleet(inv: InventoryCopy) -> model.Fleet:
    """The Crete inventory copy on a private libvirt test-driver node."""
    inv.use_test_driver()
    return inv.load()


@pytest.fixture
def fixtures() -> PromFixtures:
    """Recorded Prometheus answers (tests/unit/data/prometheus/), for the `report` tests."""
    return PromFixtures.load(Path(__file__).parent / "data" / "prometheus")


@pytest.fixture
def prom_url(fixtures: PromFixtures) -> Iterator[str]:
    """Those answers served by a real HTTP server on 127.0.0.1 (a free port)."""
    with fixtures.serve() as url:
        yield url

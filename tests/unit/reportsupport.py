"""Shared by the `report` unit tests: recorded Prometheus answers served on 127.0.0.1, the
libvirt test driver with the Crete fleet up, and the command run against that engine."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kallikratis import model
from kallikratis.cli import main_group
from kallikratis.commands import common
from kallikratis.errors import KallikratisError
from kallikratis.provision import Engine
from support import InventoryCopy

FIXTURES = Path(__file__).parent / "data" / "prometheus"
MakeEngine = Callable[[model.Fleet], Engine]
H, M, A = "hersonissos", "minoa-pediada", "archanes-asterousia"


def _quiet(_slug: str, _phase: str) -> None:
    pass


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def running_engine(inv: InventoryCopy, make_engine: MakeEngine, slugs: tuple[str, ...]) -> Engine:
    inv.use_test_driver()
    engine = make_engine(inv.load())
    engine.up(engine.fleet.select(slugs), _quiet, wait=False)
    return engine


def cli(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, *args: str, url: str | None = None
) -> Result:
    """The command against *engine* (its fleet on the shared test-driver connection)."""
    monkeypatch.setattr(common.Context, "engine", property(lambda _self: engine))
    monkeypatch.setattr(common.Context, "fleet", property(lambda _self: engine.fleet))
    monkeypatch.setenv("KALLIKRATIS_STATE_DIR", str(engine.state_dir))
    extra = ["--prometheus", url] if url else []
    return CliRunner().invoke(
        main_group, ["-i", str(engine.fleet.inventory), "report", *args, *extra]
    )


def code(result: Result) -> int:
    """The process's exit code: `main` turns a KallikratisError into its code."""
    exc = result.exception
    return exc.exit_code if isinstance(exc, KallikratisError) else result.exit_code

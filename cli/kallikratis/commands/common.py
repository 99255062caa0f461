"""What every command shares: the loaded fleet, the engine, output helpers."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from kallikratis import inventory, model
from kallikratis.errors import UsageError
from kallikratis.provision import Engine

console = Console(highlight=False)
console_err = Console(stderr=True, highlight=False)
for _c in (console, console_err):
    if not _c.is_terminal:  # logs and pipes: no wrapping of wide tables
        _c.width = max(_c.width, 200)


class Context:
    def __init__(self, inventory_path: Path | None) -> None:
        # absolute from the start: ansible-runner, the verify suites and the journal run
        # elsewhere than the current directory, where a relative path means nothing
        self.inventory_path = Path(os.path.abspath(inventory_path)) if inventory_path else None
        self._fleet: model.Fleet | None = None
        self._engine: Engine | None = None

    @property
    def fleet(self) -> model.Fleet:
        if self._fleet is None:
            if self.inventory_path is None:
                raise UsageError("no inventory: pass -i PATH or set KALLIKRATIS_INVENTORY")
            self._fleet = inventory.load(self.inventory_path)
        return self._fleet

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.fleet)
        return self._engine


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def emit_json(data: Any) -> None:
    json.dump(_plain(data), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def esc(text: Any) -> str:
    return escape(str(text))

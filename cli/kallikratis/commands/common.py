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
from rich.table import Table

from kallikratis import addresses, inventory, model
from kallikratis.errors import ProvisionError, UsageError
from kallikratis.provision import Engine, UpResult

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
        self._declared: model.Fleet | None = None
        self._fleet: model.Fleet | None = None
        self._engine: Engine | None = None

    @property
    def declared(self) -> model.Fleet:
        """The inventory alone (validated), default addresses from the deterministic
        allocation: for what needs no VM's address (validate, names, journal, images)."""
        if self._declared is None:
            if self.inventory_path is None:
                raise UsageError("no inventory: pass -i PATH or set KALLIKRATIS_INVENTORY")
            self._declared = inventory.load(self.inventory_path)
        return self._declared

    @property
    def fleet(self) -> model.Fleet:
        """The inventory with the addresses existing VMs have (read from libvirt; a
        hypervisor that cannot be reached keeps the deterministic defaults)."""
        if self._fleet is None:
            declared = self.declared
            if self._engine is None:
                self._engine = Engine(declared)
            known, _ = addresses.actual(declared, self._engine.backend)
            self._fleet = addresses.settle(declared, known)
            self._engine.fleet = self._fleet
        return self._fleet

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._fleet is None:
            _ = self.fleet
        assert self._engine is not None
        return self._engine


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
names_arg = click.argument("names", nargs=-1, metavar="[NAMES]...")
all_opt = click.option("--all", "all_", is_flag=True, help="Every municipality in the inventory.")


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


def report_results(
    results: list[UpResult], as_json: bool, title: str, to: Console | None = None
) -> None:
    """The table (or JSON) of an up/destroy, the table on *to* (default: standard output);
    ProvisionError when any failed."""
    if as_json:
        emit_json({"results": results})
    else:
        table = Table(title=title, title_justify="left")
        for col in ("municipality", "result", "seconds", "ssh ready (s)", "detail"):
            table.add_column(col)
        for r in results:
            color = "red" if r.result == "failed" else "green"
            ssh_s = f"{r.ssh_seconds:.1f}" if r.ssh_seconds is not None else ""
            table.add_row(
                esc(r.slug), f"[{color}]{r.result}[/]", f"{r.seconds:.1f}", ssh_s, esc(r.detail)
            )
        (to or console).print(table)
    failed = [r.slug for r in results if r.result == "failed"]
    if failed:
        raise ProvisionError(f"failed: {', '.join(failed)}")

"""Prometheus text format for node exporter's textfile collector: escaping, atomic writes.

Installed by the metrics role; standard library only (Debian 13's python3).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

Sample = tuple[str, dict[str, str], float]


def escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(families: dict[str, tuple[str, str]], samples: list[Sample]) -> str:
    """Text of the samples, grouped by metric name; families maps name -> (type, help)."""
    out: list[str] = []
    for name, (kind, text) in families.items():
        mine = [s for s in samples if s[0] == name]
        if not mine:
            continue
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for _, labels, value in mine:
            inner = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
            out.append(
                f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"
            )
    unknown = {s[0] for s in samples} - set(families)
    if unknown:
        raise ValueError(f"metrics without a HELP/TYPE entry: {sorted(unknown)}")
    return "\n".join(out) + "\n" if out else ""


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write next to the target and rename over it: the reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict:
    """A collector's JSON state, {} when missing or unreadable (a counter then restarts)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: Path, state: dict) -> None:
    write_atomic(path, json.dumps(state, sort_keys=True), mode=0o600)

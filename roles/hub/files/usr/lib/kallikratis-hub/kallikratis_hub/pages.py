"""The hub's Greek HTML pages (Jinja2, autoescaped), with English labels beside the Greek."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
_ENV: Environment | None = None


def environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _ENV.filters["day"] = lambda s: (s or "")[:10]
    return _ENV


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)

"""The one Jinja2 environment: every document Kallikratis writes comes from templates/."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jinja2

from kallikratis import paths


def yaml_str(value: Any) -> str:
    """A YAML-safe scalar: JSON strings are valid YAML and escape quotes and newlines.

    YAML also breaks lines at U+0085, U+2028 and U+2029, which JSON leaves alone: escape them.
    """
    text = json.dumps(value, ensure_ascii=False)
    for ch in ("\u0085", "\u2028", "\u2029"):
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("xml", "xml.j2", "html", "html.j2")
        ),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["yaml_str"] = yaml_str
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)

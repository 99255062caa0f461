"""Image recipes: ``vm_images/<name>/`` loaded, validated and hashed into a :class:`Recipe`.

A recipe directory holds ``recipe.yml`` (suite, mirror, packages, disk size), an optional
``files/`` tree copied over the root filesystem, an optional ``wheels.txt`` (wheels fetched on the
host into /opt/kallikratis/wheels) and an optional ``customize.sh`` run inside the image. The image
version is a hash of every file in the directory plus ``BUILDER_REVISION``, so an unchanged recipe
is never rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from kallikratis.errors import ImageError

BUILDER_REVISION = "3"
RECIPE_FILE = "recipe.yml"

_FIELDS = {"name", "suite", "mirror", "packages", "disk_size_gib"}
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    suite: str
    mirror: str
    packages: tuple[str, ...]
    disk_size_gib: int
    version: str


def list_recipes(images_dir: Path) -> list[str]:
    """Names of the recipe directories (those holding a recipe.yml), sorted."""
    if not images_dir.is_dir():
        raise ImageError(f"{images_dir}: image recipe directory not found")
    return sorted(p.parent.name for p in images_dir.glob(f"*/{RECIPE_FILE}"))


def recipe_version(recipe_dir: Path) -> str:
    """First 12 hex digits of sha256 over every file (sorted paths + contents) and the builder."""
    digest = hashlib.sha256(f"builder:{BUILDER_REVISION}\0".encode())
    for path in sorted(p for p in recipe_dir.rglob("*") if not p.is_dir() or p.is_symlink()):
        rel = path.relative_to(recipe_dir).as_posix()
        if "__pycache__" in rel.split("/"):
            continue
        digest.update(f"{rel}\0".encode())
        if path.is_symlink():
            digest.update(f"symlink:{os.readlink(path)}".encode())
        else:
            digest.update(f"mode:{path.stat().st_mode & 0o111:o}\0".encode())
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def load_recipe(images_dir: Path, name: str) -> Recipe:
    """Read and validate ``images_dir/name/recipe.yml``; every problem names file and field."""
    recipe_dir = images_dir / name
    file = recipe_dir / RECIPE_FILE
    if not file.is_file():
        known = ", ".join(list_recipes(images_dir)) if images_dir.is_dir() else "none"
        raise ImageError(f"{file}: no such image recipe (known: {known or 'none'})")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ImageError(f"{file}: cannot read recipe: {exc}") from exc
    if not isinstance(data, dict):
        raise ImageError(f"{file}: top level must be a mapping of fields")
    unknown = sorted(str(k) for k in set(data) - _FIELDS)
    if unknown:
        raise ImageError(f"{file}: {unknown[0]}: unknown field (allowed: {sorted(_FIELDS)})")
    missing = sorted(_FIELDS - {"name"} - set(data))
    if missing:
        raise ImageError(f"{file}: {missing[0]}: required field is missing")
    if data.get("name", name) != name:
        raise ImageError(f"{file}: name: {data['name']!r} differs from directory name {name!r}")
    return Recipe(
        name=name,
        path=recipe_dir,
        suite=_check_str(file, "suite", data["suite"], _SUITE_RE),
        mirror=_check_mirror(file, data["mirror"]),
        packages=_check_packages(file, data["packages"]),
        disk_size_gib=_check_size(file, data["disk_size_gib"]),
        version=recipe_version(recipe_dir),
    )


def _check_str(file: Path, field: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ImageError(f"{file}: {field}: invalid value {value!r}")
    return value


def _check_mirror(file: Path, value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ImageError(f"{file}: mirror: must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _check_packages(file: Path, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ImageError(f"{file}: packages: must be a non-empty list of package names")
    for item in value:
        if not isinstance(item, str) or not _PACKAGE_RE.match(item):
            raise ImageError(f"{file}: packages: invalid package name {item!r}")
    if len(set(value)) != len(value):
        dup = next(p for p in value if value.count(p) > 1)
        raise ImageError(f"{file}: packages: {dup!r} is listed twice")
    return tuple(value)


def _check_size(file: Path, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 1024:
        raise ImageError(f"{file}: disk_size_gib: must be an integer from 2 to 1024, got {value!r}")
    return value

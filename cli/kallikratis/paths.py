"""Where things live: the project checkout (templates, recipes) and the state directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = PROJECT_ROOT / "templates"
STATE_ENV = "KALLIKRATIS_STATE_DIR"


def images_dir() -> Path:
    return Path(os.environ.get("KALLIKRATIS_IMAGES_DIR", PROJECT_ROOT / "vm_images"))


def state_dir() -> Path:
    """Keys, vault password, image cache: outside the inventory, never in git."""
    default = "/var/lib/kallikratis" if os.geteuid() == 0 else "~/.local/share/kallikratis"
    return Path(os.environ.get(STATE_ENV, default)).expanduser()


def image_cache_dir() -> Path:
    return Path(os.environ.get("KALLIKRATIS_IMAGE_CACHE", state_dir() / "images"))

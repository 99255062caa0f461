"""Publishing built golden images into a hypervisor's storage pool.

A golden volume is trusted only when its checksum marker volume exists; the marker is written
after the upload completes, so an interrupted upload is detected and redone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kallikratis import images, recipes, render
from kallikratis.errors import ImageError
from kallikratis.hypervisor import LibvirtBackend

log = logging.getLogger(__name__)
PREFIX = "golden-"
SUFFIX = ".qcow2"


@dataclass(frozen=True)
class PublishedImage:
    volume: str
    path: str
    version: str
    sha256: str
    size_bytes: int


def volume_name(recipe: str, version: str) -> str:
    """The golden volume of a recipe version in a storage pool."""
    return f"{PREFIX}{recipe}-{version}{SUFFIX}"


def version_of(volume: str) -> str | None:
    """The reverse: the recipe version of a golden volume name, None for any other volume."""
    if not volume.startswith(PREFIX) or not volume.endswith(SUFFIX):
        return None
    return volume.removesuffix(SUFFIX).rsplit("-", 1)[-1]


def marker_name(volume: str) -> str:
    return volume + ".sha256"


def published(backend: LibvirtBackend, pool: str) -> list[PublishedImage]:
    """Golden images in *pool* whose upload completed."""
    vols = {v.name: v for v in backend.volumes(pool)}
    out = []
    for name, vol in sorted(vols.items()):
        version = version_of(name)
        if version is None or marker_name(name) not in vols:
            continue
        digest = _read_marker(backend, pool, name)
        out.append(PublishedImage(name, vol.path, version, digest, vol.allocation_bytes))
    return out


def _read_marker(backend: LibvirtBackend, pool: str, volume: str) -> str:
    if not backend.stores_data:
        return ""
    return backend.download(pool, marker_name(volume)).decode(errors="replace").strip("\0 \n")


def ensure_published(
    backend: LibvirtBackend,
    pool: str,
    recipe: recipes.Recipe,
    cache: Path,
    progress: Callable[[str], None] | None = None,
) -> PublishedImage:
    """Make sure the recipe's current image is complete in *pool*; upload it if not."""
    volume = volume_name(recipe.name, recipe.version)
    for img in published(backend, pool):
        if img.volume == volume:
            return img
    built = images.cached_image(recipe, cache)
    if built is None and backend.stores_data:
        raise ImageError(
            f"image {recipe.name} version {recipe.version} is not built yet: "
            f"run `kallikratis image build {recipe.name}`"
        )
    backend.delete_volume(pool, volume)  # an interrupted upload: start again
    backend.delete_volume(pool, marker_name(volume))
    size = built.size_bytes if built else 1 << 20
    virtual = built.virtual_size_bytes if built else 1 << 30
    backend.create_volume(
        pool, render.render("raw-volume.xml.j2", name=volume, capacity=virtual, format="qcow2")
    )
    if built is not None and backend.stores_data:
        if progress:
            progress(f"uploading {volume} ({size >> 20} MiB)")
        backend.upload(pool, volume, built.path)
    digest = built.sha256 if built else "test-driver"
    backend.create_volume(
        pool,
        render.render(
            "raw-volume.xml.j2", name=marker_name(volume), capacity=len(digest), format="raw"
        ),
    )
    if backend.stores_data:
        backend.upload(pool, marker_name(volume), digest.encode())
    vol = backend.volume(pool, volume)
    assert vol is not None
    log.info("published %s into pool %s", volume, pool)
    return PublishedImage(volume, vol.path, recipe.version, digest, size)

"""Golden images: build recipes (see :mod:`kallikratis.recipes`) into cached qcow2 files.

A finished image is ``<cache>/<name>-<version>.qcow2`` plus a ``.sha256`` sidecar written last;
an unchanged recipe is never rebuilt. Building needs root, mmdebstrap, sfdisk, losetup/partx,
mkfs.ext4 and qemu-img (the steps are in :mod:`kallikratis.imagebuilder`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kallikratis import imagebuilder
from kallikratis.errors import ImageError
from kallikratis.imagebuilder import Progress
from kallikratis.recipes import Recipe

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/var/lib/kallikratis/images")
_IMAGE_RE = re.compile(r"^(?P<name>.+)-(?P<version>[0-9a-f]{12})\.qcow2$")


@dataclass(frozen=True)
class BuiltImage:
    name: str
    version: str
    path: Path
    sha256: str
    size_bytes: int
    virtual_size_bytes: int


# --------------------------------------------------------------------------- cache


def _image_path(cache_dir: Path, name: str, version: str) -> Path:
    return cache_dir / f"{name}-{version}.qcow2"


def _sidecar(image: Path) -> Path:
    return image.with_name(image.name + ".sha256")


def qcow2_virtual_size(path: Path) -> int:
    """Virtual disk size from the qcow2 header (magic, version, ..., size at offset 24)."""
    try:
        with path.open("rb") as fh:
            header = fh.read(32)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image: {exc}") from exc
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        raise ImageError(f"{path}: not a qcow2 image")
    return int(struct.unpack(">Q", header[24:32])[0])


def _load_cached(path: Path, name: str, version: str) -> BuiltImage | None:
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        return None
    fields = sidecar.read_text(encoding="utf-8").split()
    if len(fields) < 1 or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
        raise ImageError(f"{sidecar}: malformed checksum file")
    return BuiltImage(
        name=name,
        version=version,
        path=path,
        sha256=fields[0],
        size_bytes=path.stat().st_size,
        virtual_size_bytes=qcow2_virtual_size(path),
    )


def cached_image(recipe: Recipe, cache_dir: Path) -> BuiltImage | None:
    """The finished image for this recipe version (qcow2 + .sha256 sidecar), if any."""
    return _load_cached(
        _image_path(cache_dir, recipe.name, recipe.version), recipe.name, recipe.version
    )


def cached_images(cache_dir: Path) -> list[BuiltImage]:
    """Every finished image in the cache, sorted by name then version."""
    if not cache_dir.is_dir():
        return []
    found = []
    for path in sorted(cache_dir.glob("*.qcow2")):
        match = _IMAGE_RE.match(path.name)
        if match:
            image = _load_cached(path, match["name"], match["version"])
            if image is not None:
                found.append(image)
    return found


# --------------------------------------------------------------------------- build


def build(
    recipe: Recipe,
    cache_dir: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> BuiltImage:
    """Build the recipe into ``cache_dir/<name>-<version>.qcow2``, or reuse the cached one."""
    say = _reporter(progress)
    if not force:
        cached = cached_image(recipe, cache_dir)
        if cached is not None:
            say(f"image {cached.path.name} is up to date (cached)")
            return cached
    if os.geteuid() != 0:
        raise ImageError("building an image needs root (loop devices, mounts, chroot)")
    for tool in ("mmdebstrap", "sfdisk", "losetup", "partx", "mkfs.ext4", "qemu-img", "fstrim"):
        if shutil.which(tool) is None:
            raise ImageError(f"building an image needs {tool!r}, which is not installed")
    with _build_lock(cache_dir):
        _remove_stale_builds(cache_dir, say)
        try:
            workdir = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=cache_dir))
        except OSError as exc:
            raise ImageError(f"{cache_dir}: cannot create build directory: {exc}") from exc
        try:
            raw = workdir / "disk.raw"
            imagebuilder.in_private_mount_namespace(
                lambda: imagebuilder.build_raw(recipe, workdir, raw, say)
            )
            return _publish(recipe, workdir, raw, cache_dir, say)
        finally:
            imagebuilder.remove_build_dir(workdir)


@contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    """One build per cache directory at a time (flock, released when the process dies)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fh = (cache_dir / ".build.lock").open("w")
    except OSError as exc:
        raise ImageError(f"{cache_dir}: cannot use image cache: {exc}") from exc
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ImageError(f"{cache_dir}: another image build is running") from exc
        yield


def _remove_stale_builds(cache_dir: Path, say: Progress) -> None:
    """Leftovers of a killed build (we hold the lock, so nobody else is using them)."""
    for stale in cache_dir.glob(".build-*"):
        say(f"removing leftovers of an interrupted build: {stale.name}")
        imagebuilder.remove_build_dir(stale)


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    return say


def _publish(
    recipe: Recipe, workdir: Path, raw: Path, cache_dir: Path, say: Progress
) -> BuiltImage:
    """Compress to qcow2, then rename image and checksum sidecar into place (sidecar last)."""
    say("converting to compressed qcow2")
    tmp = workdir / "image.qcow2"
    imagebuilder.run(
        ["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(tmp)], "qemu-img convert"
    )
    digest = hashlib.sha256()
    with tmp.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    final = _image_path(cache_dir, recipe.name, recipe.version)
    sidecar_tmp = workdir / "image.sha256"
    sidecar_tmp.write_text(f"{digest.hexdigest()}  {final.name}\n")
    os.replace(tmp, final)
    os.replace(sidecar_tmp, _sidecar(final))
    image = _load_cached(final, recipe.name, recipe.version)
    assert image is not None
    say(f"built {final} ({image.size_bytes / 1e6:.0f} MB)")
    return image

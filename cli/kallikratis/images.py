"""Golden images: load recipes from ``vm_images/<name>/`` and build them into cached qcow2 files.

A recipe directory holds ``recipe.yml`` (suite, mirror, packages, disk size), an optional
``files/`` tree copied over the root filesystem, an optional ``wheels.txt`` (wheels fetched on the
host into /opt/kallikratis/wheels) and an optional ``customize.sh`` run inside the image. The image
version is a hash of every file in the directory plus ``BUILDER_REVISION``, so an unchanged recipe
is never rebuilt. Building needs root, mmdebstrap, sfdisk, losetup/partx, mkfs.ext4 and qemu-img.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from kallikratis.errors import ImageError

log = logging.getLogger(__name__)

BUILDER_REVISION = "3"
RECIPE_FILE = "recipe.yml"
DEFAULT_CACHE_DIR = Path("/var/lib/kallikratis/images")

_FIELDS = {"name", "suite", "mirror", "packages", "disk_size_gib"}
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_IMAGE_RE = re.compile(r"^(?P<name>.+)-(?P<version>[0-9a-f]{12})\.qcow2$")
_BUILD_TIMEOUT = 1800
_CLONE_NEWNS = 0x00020000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    suite: str
    mirror: str
    packages: tuple[str, ...]
    disk_size_gib: int
    version: str


@dataclass(frozen=True)
class BuiltImage:
    name: str
    version: str
    path: Path
    sha256: str
    size_bytes: int
    virtual_size_bytes: int

    @property
    def volume_name(self) -> str:
        return f"golden-{self.name}-{self.version}.qcow2"


# --------------------------------------------------------------------------- recipes


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
            _in_private_mount_namespace(lambda: _build_raw(recipe, workdir, raw, say))
            return _publish(recipe, workdir, raw, cache_dir, say)
        finally:
            _remove_build_dir(workdir)


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
        _remove_build_dir(stale)


def _remove_build_dir(workdir: Path) -> None:
    _unmount_below(workdir)
    raw = workdir / "disk.raw"
    if raw.exists():
        try:
            found = subprocess.run(["losetup", "-j", str(raw)], capture_output=True, text=True)
        except OSError:
            found = subprocess.CompletedProcess([], 0, stdout="")
        for line in found.stdout.splitlines():
            disk = line.split(":", 1)[0]
            subprocess.run(["partx", "--delete", disk], capture_output=True, check=False)
            subprocess.run(["losetup", "--detach", disk], capture_output=True, check=False)
    shutil.rmtree(workdir, ignore_errors=True)


def _in_private_mount_namespace(step: Callable[[], None]) -> None:
    """Run step in a forked child with its own mount namespace.

    Mounts made there are invisible to the host, so a mount namespace created meanwhile (libvirt
    starts every QEMU in one) cannot copy them and keep the image's filesystem alive and dirty
    after we unmount it; and they vanish with the child if the build is killed.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report an error through the pipe, never return into the caller
        os.close(read_fd)
        code = 0
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(_CLONE_NEWNS) != 0:
                raise ImageError(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
            _run(["mount", "--make-rprivate", "/"], "making mounts private")
            step()
        except BaseException as exc:
            text = exc.message if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"
            os.write(write_fd, text.encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        message = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise ImageError(message or f"image build process failed (wait status {status})")


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    return say


def _run(cmd: list[str], what: str, *, stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
    log.debug("running %s", " ".join(cmd))
    try:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=_BUILD_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"{what} failed: {exc}") from exc
    if done.returncode not in ok:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ImageError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _build_raw(recipe: Recipe, workdir: Path, raw: Path, say: Progress) -> None:
    say(f"building {recipe.name}-{recipe.version}: {recipe.disk_size_gib} GiB disk, {recipe.suite}")
    with raw.open("wb") as fh:
        fh.truncate(recipe.disk_size_gib * 1024**3)
    _run(
        ["sfdisk", "--quiet", str(raw)],
        "partitioning",
        stdin="label: dos\nstart=2048, type=83, bootable\n",
    )
    root_uuid = str(uuid.uuid4())
    mnt = workdir / "root"
    mnt.mkdir()
    with ExitStack() as stack:
        disk, part = stack.enter_context(_loop_device(raw))
        _run(["mkfs.ext4", "-q", "-L", "root", "-U", root_uuid, part], "mkfs.ext4")
        stack.enter_context(_mounted(part, mnt))
        say(
            f"bootstrapping Debian {recipe.suite} with {len(recipe.packages)} packages (mmdebstrap)"
        )
        _bootstrap(recipe, mnt)
        say("configuring the image (files, customize.sh, fstab, GRUB)")
        with _chroot_mounts(mnt, disk, part, root_uuid):
            _customize(recipe, mnt, root_uuid)
            _install_grub(mnt, disk, root_uuid)
            _clean(mnt)
        _run(["fstrim", str(mnt)], "fstrim")
        _unmount_clean(mnt)
        # GRUB reads the disk without replaying the journal: it must be clean and checked.
        _run(["e2fsck", "-f", "-y", "-E", "discard", part], "e2fsck", ok=(0, 1))


def _bootstrap(recipe: Recipe, target: Path) -> None:
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=directory",
            "--skip=check/empty",  # the fresh ext4 holds lost+found
            '--aptopt=Acquire::Languages "none"',
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(target),
            recipe.mirror,
        ],
        "mmdebstrap",
    )


def _customize(recipe: Recipe, mnt: Path, root_uuid: str) -> None:
    files = recipe.path / "files"
    if files.is_dir():
        shutil.copytree(files, mnt, symlinks=True, dirs_exist_ok=True)
    (mnt / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n")
    (mnt / "etc/hostname").write_text("localhost\n")
    _download_wheels(recipe, mnt)
    script = recipe.path / "customize.sh"
    if script.is_file():
        _run(["chroot", str(mnt), "/bin/sh", "-s"], "customize.sh", stdin=script.read_text())


def _download_wheels(recipe: Recipe, mnt: Path) -> None:
    """`wheels.txt` (pip requirements): wheels for the image's Python into /opt/kallikratis/wheels.

    Downloaded on the build host (the image has no network at build or run time); customize.sh
    then builds the application venvs offline from them.
    """
    reqs = recipe.path / "wheels.txt"
    if not reqs.is_file():
        return
    pythons = sorted(
        p.name for p in (mnt / "usr/bin").glob("python3.[0-9]*") if p.name[8:].isdigit()
    )
    if not pythons:
        raise ImageError(f"{reqs}: the image has no python3.X to download wheels for")
    version = pythons[-1].removeprefix("python")
    abi = "cp" + version.replace(".", "")
    dest = mnt / "opt/kallikratis/wheels"
    dest.mkdir(parents=True, exist_ok=True)
    platforms = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        "--python-version",
        version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        *[f"--platform={p}" for p in platforms],
        "-r",
        str(reqs),
        "pip",
        "setuptools",
        "wheel",
    ]
    _run(argv, "pip download")


def _install_grub(mnt: Path, disk: str, root_uuid: str) -> None:
    _run(["chroot", str(mnt), "grub-install", "--target=i386-pc", disk], "grub-install")
    _run(["chroot", str(mnt), "update-grub"], "update-grub")
    cfg = mnt / "boot/grub/grub.cfg"
    text = re.sub(r"root=/dev/\S+", f"root=UUID={root_uuid}", cfg.read_text())
    if f"root=UUID={root_uuid}" not in text or "/dev/loop" in text:
        raise ImageError(f"{cfg}: could not point the kernel at root=UUID={root_uuid}")
    cfg.write_text(text)


def _clean(mnt: Path) -> None:
    """No host keys, no machine identity, no cloud-init state, no apt caches in the image."""
    _run(["chroot", str(mnt), "apt-get", "clean"], "apt-get clean")
    for pattern in (
        "etc/ssh/ssh_host_*",
        "var/lib/apt/lists/*",
        "var/lib/cloud/*",
        "var/log/*.log",
    ):
        for path in mnt.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (mnt / "etc/machine-id").write_text("")
    (mnt / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (mnt / "var/lib/systemd/random-seed").unlink(missing_ok=True)


@contextmanager
def _loop_device(raw: Path) -> Iterator[tuple[str, str]]:
    """Attach the disk; create the partition node by hand (no udev here)."""
    disk = _run(["losetup", "--find", "--show", "--partscan", str(raw)], "losetup").strip()
    created: Path | None = None
    try:
        name = Path(disk).name
        if not Path(f"/sys/block/{name}/{name}p1").exists():
            _run(["partx", "--add", disk], "partx")
        major, minor = Path(f"/sys/block/{name}/{name}p1/dev").read_text().strip().split(":")
        part = Path(f"{disk}p1")
        if not part.exists():
            os.mknod(part, 0o600 | 0o060000, os.makedev(int(major), int(minor)))
            created = part
        yield disk, str(part)
    finally:
        subprocess.run(["partx", "--delete", disk], capture_output=True, check=False)
        subprocess.run(["losetup", "--detach", disk], capture_output=True, check=False)
        if created is not None:
            created.unlink(missing_ok=True)


@contextmanager
def _mounted(device: str, target: Path) -> Iterator[None]:
    _run(["mount", device, str(target)], f"mounting {device}")
    try:
        yield
    finally:
        _kill_chroot_processes(target)
        _unmount_below(target)


def _kill_chroot_processes(mnt: Path) -> None:
    """Processes a build step left running inside the image (they keep its mounts busy)."""
    root = str(mnt.resolve())
    for proc in Path("/proc").iterdir():
        try:
            where = os.readlink(proc / "root") if proc.name.isdigit() else ""
            if where == root or where.startswith(root + "/"):
                log.warning("killing %s left running in the image", (proc / "comm").read_text())
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _unmount_clean(mnt: Path) -> None:
    """Unmount the image for real (no lazy unmount): a dirty journal makes GRUB fail."""
    for attempt in range(10):
        _kill_chroot_processes(mnt)
        _unmount_below(mnt, lazy=False)
        if not _mounts_below(mnt):
            return
        time.sleep(0.5 * (attempt + 1))
    raise ImageError(f"{mnt}: cannot unmount the image: {', '.join(_mounts_below(mnt))} busy")


def _mounts_below(target: Path) -> list[str]:
    prefix = str(target.resolve())
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        points = [line.split()[1] for line in fh]
    return sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, reverse=True)


def _unmount_below(target: Path, *, lazy: bool = True) -> None:
    """Unmount target and everything under it, deepest first (also leftovers of a killed step)."""
    for point in _mounts_below(target):
        failed = subprocess.run(["umount", point], capture_output=True, check=False).returncode
        if failed and lazy:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


@contextmanager
def _chroot_mounts(mnt: Path, disk: str, part: str, root_uuid: str) -> Iterator[None]:
    """A private /dev (tmpfs) holding only what GRUB needs, plus /proc and /sys."""
    dev = mnt / "dev"
    try:
        _run(["mount", "-t", "proc", "proc", str(mnt / "proc")], "mounting /proc")
        _run(["mount", "-t", "sysfs", "sysfs", str(mnt / "sys")], "mounting /sys")
        _run(["mount", "-t", "tmpfs", "-o", "mode=755", "dev", str(dev)], "mounting /dev")
        for node in ("null", "zero", "random", "urandom", "full", "tty", disk, part):
            src = Path(node if node.startswith("/") else f"/dev/{node}")
            st = src.stat()
            os.mknod(dev / src.name, st.st_mode, st.st_rdev)
        (dev / "disk/by-uuid").mkdir(parents=True)
        (dev / "disk/by-uuid" / root_uuid).symlink_to(f"../../{Path(part).name}")
        yield
    finally:
        _kill_chroot_processes(mnt)
        for sub in ("dev", "sys", "proc"):
            _unmount_below(mnt / sub)


def _publish(
    recipe: Recipe, workdir: Path, raw: Path, cache_dir: Path, say: Progress
) -> BuiltImage:
    """Compress to qcow2, then rename image and checksum sidecar into place (sidecar last)."""
    say("converting to compressed qcow2")
    tmp = workdir / "image.qcow2"
    _run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(tmp)], "qemu-img convert")
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

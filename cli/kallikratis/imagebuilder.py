"""Building a recipe into a raw disk: partitioning, mmdebstrap, files, customize.sh, GRUB.

Runs as root in a private mount namespace (see :func:`in_private_mount_namespace`); needs
mmdebstrap, sfdisk, losetup/partx, mkfs.ext4 and e2fsck. :mod:`kallikratis.images` drives it
and publishes the result into the image cache.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from kallikratis.errors import ImageError
from kallikratis.recipes import Recipe

log = logging.getLogger(__name__)

_BUILD_TIMEOUT = 1800
_CLONE_NEWNS = 0x00020000

Progress = Callable[[str], None]


def remove_build_dir(workdir: Path) -> None:
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


def in_private_mount_namespace(step: Callable[[], None]) -> None:
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
            run(["mount", "--make-rprivate", "/"], "making mounts private")
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


def run(cmd: list[str], what: str, *, stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
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


def build_raw(recipe: Recipe, workdir: Path, raw: Path, say: Progress) -> None:
    say(f"building {recipe.name}-{recipe.version}: {recipe.disk_size_gib} GiB disk, {recipe.suite}")
    with raw.open("wb") as fh:
        fh.truncate(recipe.disk_size_gib * 1024**3)
    run(
        ["sfdisk", "--quiet", str(raw)],
        "partitioning",
        stdin="label: dos\nstart=2048, type=83, bootable\n",
    )
    root_uuid = str(uuid.uuid4())
    mnt = workdir / "root"
    mnt.mkdir()
    with ExitStack() as stack:
        disk, part = stack.enter_context(_loop_device(raw))
        run(["mkfs.ext4", "-q", "-L", "root", "-U", root_uuid, part], "mkfs.ext4")
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
        run(["fstrim", str(mnt)], "fstrim")
        _unmount_clean(mnt)
        # GRUB reads the disk without replaying the journal: it must be clean and checked.
        run(["e2fsck", "-f", "-y", "-E", "discard", part], "e2fsck", ok=(0, 1))


def _bootstrap(recipe: Recipe, target: Path) -> None:
    run(
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
    # which golden image a VM was born from (the monitoring's kallikratis_version_info)
    (mnt / "etc/kallikratis").mkdir(mode=0o755, exist_ok=True)
    (mnt / "etc/kallikratis/image-version").write_text(f"{recipe.version}\n")
    _download_wheels(recipe, mnt)
    script = recipe.path / "customize.sh"
    if script.is_file():
        run(["chroot", str(mnt), "/bin/sh", "-s"], "customize.sh", stdin=script.read_text())


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
    run(argv, "pip download")


def _install_grub(mnt: Path, disk: str, root_uuid: str) -> None:
    run(["chroot", str(mnt), "grub-install", "--target=i386-pc", disk], "grub-install")
    run(["chroot", str(mnt), "update-grub"], "update-grub")
    cfg = mnt / "boot/grub/grub.cfg"
    text = re.sub(r"root=/dev/\S+", f"root=UUID={root_uuid}", cfg.read_text())
    if f"root=UUID={root_uuid}" not in text or "/dev/loop" in text:
        raise ImageError(f"{cfg}: could not point the kernel at root=UUID={root_uuid}")
    cfg.write_text(text)


def _clean(mnt: Path) -> None:
    """No host keys, no machine identity, no cloud-init state, no apt caches in the image."""
    run(["chroot", str(mnt), "apt-get", "clean"], "apt-get clean")
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
    disk = run(["losetup", "--find", "--show", "--partscan", str(raw)], "losetup").strip()
    created: Path | None = None
    try:
        name = Path(disk).name
        if not Path(f"/sys/block/{name}/{name}p1").exists():
            run(["partx", "--add", disk], "partx")
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
    run(["mount", device, str(target)], f"mounting {device}")
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
        run(["mount", "-t", "proc", "proc", str(mnt / "proc")], "mounting /proc")
        run(["mount", "-t", "sysfs", "sysfs", str(mnt / "sys")], "mounting /sys")
        run(["mount", "-t", "tmpfs", "-o", "mode=755", "dev", str(dev)], "mounting /dev")
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

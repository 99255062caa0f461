"""Fast tests for the golden-image recipes and cache: no building, no root, no network."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from kallikratis import golden, imagebuilder, images, recipes
from kallikratis.errors import ImageError
from kallikratis.images import BuiltImage
from kallikratis.recipes import Recipe

REPO_IMAGES = Path(__file__).resolve().parents[2] / "vm_images"

VALID = """\
name: demo
suite: trixie
mirror: http://deb.debian.org/debian/
disk_size_gib: 4
packages: [linux-image-cloud-amd64, grub-pc, cloud-init, openssh-server]
"""


def write_recipe(images_dir: Path, name: str = "demo", text: str = VALID) -> Path:
    recipe_dir = images_dir / name
    recipe_dir.mkdir(parents=True, exist_ok=True)
    (recipe_dir / "recipe.yml").write_text(text)
    return recipe_dir


def fake_qcow2(path: Path, virtual_size: int = 4 * 1024**3) -> bytes:
    header = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, virtual_size) + b"\0" * 72
    path.write_bytes(header)
    return header


def fake_cached(cache_dir: Path, recipe: Recipe) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{recipe.name}-{recipe.version}.qcow2"
    digest = hashlib.sha256(fake_qcow2(path)).hexdigest()
    (cache_dir / f"{path.name}.sha256").write_text(f"{digest}  {path.name}\n")
    return path


# --------------------------------------------------------------------------- loading


def test_load_valid_recipe(tmp_path: Path) -> None:
    recipe_dir = write_recipe(tmp_path)
    recipe = recipes.load_recipe(tmp_path, "demo")
    assert recipe.name == "demo"
    assert recipe.path == recipe_dir
    assert recipe.suite == "trixie"
    assert recipe.mirror == "http://deb.debian.org/debian"
    assert recipe.packages == ("linux-image-cloud-amd64", "grub-pc", "cloud-init", "openssh-server")
    assert recipe.disk_size_gib == 4
    assert len(recipe.version) == 12 and int(recipe.version, 16) >= 0


def test_list_recipes_only_dirs_with_recipe(tmp_path: Path) -> None:
    write_recipe(tmp_path, "b")
    write_recipe(tmp_path, "a")
    (tmp_path / "not-a-recipe").mkdir()
    assert recipes.list_recipes(tmp_path) == ["a", "b"]


def test_list_recipes_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        recipes.list_recipes(tmp_path / "nope")


def test_unknown_recipe_names_known_ones(tmp_path: Path) -> None:
    write_recipe(tmp_path, "demo")
    with pytest.raises(ImageError, match=r"no such image recipe \(known: demo\)"):
        recipes.load_recipe(tmp_path, "other")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("suite: trixie", "suite: Trixie!", r"suite: invalid value"),
        ("mirror: http://deb.debian.org/debian/", "mirror: ftp://x", r"mirror: must be an http"),
        ("disk_size_gib: 4", "disk_size_gib: four", r"disk_size_gib: must be an integer"),
        ("disk_size_gib: 4", "disk_size_gib: 1", r"disk_size_gib: must be an integer"),
        ("disk_size_gib: 4", "disk_size_gib: true", r"disk_size_gib: must be an integer"),
        ("packages: [linux", "packages: [Bad_Name, linux", r"packages: invalid package name"),
        ("packages: [linux", "packages: [grub-pc, linux", r"packages: 'grub-pc' is listed twice"),
        ("name: demo", "name: other", r"name: 'other' differs from directory name 'demo'"),
        ("suite: trixie", "suite: trixie\nvariant: minbase", r"variant: unknown field"),
        ("suite: trixie\n", "", r"suite: required field is missing"),
    ],
)
def test_invalid_field_names_file_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in VALID
    write_recipe(tmp_path, text=VALID.replace(old, new, 1))
    with pytest.raises(ImageError, match=message) as info:
        recipes.load_recipe(tmp_path, "demo")
    assert str(tmp_path / "demo" / "recipe.yml") in info.value.message


def test_empty_package_list(tmp_path: Path) -> None:
    text = VALID.replace(VALID.splitlines()[-1], "packages: []")
    write_recipe(tmp_path, text=text)
    with pytest.raises(ImageError, match="packages: must be a non-empty list"):
        recipes.load_recipe(tmp_path, "demo")


@pytest.mark.parametrize("text", ["- just\n- a list\n", "key: [unclosed\n", ""])
def test_malformed_yaml(tmp_path: Path, text: str) -> None:
    write_recipe(tmp_path, text=text)
    with pytest.raises(ImageError, match=r"recipe\.yml: (cannot read recipe|top level)"):
        recipes.load_recipe(tmp_path, "demo")


def test_repository_recipe_is_valid() -> None:
    recipe = recipes.load_recipe(REPO_IMAGES, "debian13")
    assert recipe.suite == "trixie"
    for package in ("linux-image-cloud-amd64", "grub-pc", "cloud-init", "openssh-server", "sudo"):
        assert package in recipe.packages
    cloud_cfg = recipe.path / "files/etc/cloud/cloud.cfg.d"
    assert any("datasource_list: [NoCloud]" in p.read_text() for p in cloud_cfg.glob("*.cfg"))


# --------------------------------------------------------------------------- version


def test_version_is_stable(tmp_path: Path) -> None:
    write_recipe(tmp_path)
    first = recipes.load_recipe(tmp_path, "demo").version
    assert recipes.load_recipe(tmp_path, "demo").version == first
    other = tmp_path / "copy"
    write_recipe(other)
    assert recipes.load_recipe(other, "demo").version == first


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: (d / "recipe.yml").write_text(VALID.replace("4\n", "5\n")),
        lambda d: (d / "customize.sh").write_text("true\n"),
        lambda d: (d / "files/etc").mkdir(parents=True) or (d / "files/etc/x.cfg").write_text(""),
    ],
)
def test_version_changes_on_edit(tmp_path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    recipe_dir = write_recipe(tmp_path)
    before = recipes.load_recipe(tmp_path, "demo").version
    edit(recipe_dir)
    assert recipes.load_recipe(tmp_path, "demo").version != before


def test_version_changes_on_rename(tmp_path: Path) -> None:
    recipe_dir = write_recipe(tmp_path)
    (recipe_dir / "a.cfg").write_text("same")
    before = recipes.load_recipe(tmp_path, "demo").version
    (recipe_dir / "a.cfg").rename(recipe_dir / "b.cfg")
    assert recipes.load_recipe(tmp_path, "demo").version != before


def test_version_depends_on_builder_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_recipe(tmp_path)
    before = recipes.load_recipe(tmp_path, "demo").version
    monkeypatch.setattr(recipes, "BUILDER_REVISION", recipes.BUILDER_REVISION + "-next")
    assert recipes.load_recipe(tmp_path, "demo").version != before


# --------------------------------------------------------------------------- cache


def test_cached_image_reused_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_recipe(tmp_path / "images")
    recipe = recipes.load_recipe(tmp_path / "images", "demo")
    path = fake_cached(tmp_path / "cache", recipe)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not build")

    monkeypatch.setattr(imagebuilder, "build_raw", no_build)
    messages: list[str] = []
    image = images.build(recipe, tmp_path / "cache", progress=messages.append)
    assert image == images.cached_image(recipe, tmp_path / "cache")
    assert image.path == path
    assert image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image.size_bytes == path.stat().st_size
    assert image.virtual_size_bytes == 4 * 1024**3
    assert golden.volume_name(image.name, image.version) == f"golden-demo-{recipe.version}.qcow2"
    assert golden.version_of(f"golden-demo-{recipe.version}.qcow2") == recipe.version
    assert golden.version_of(f"demo-{recipe.version}.qcow2") is None
    assert messages and "up to date" in messages[0]


def test_image_without_sidecar_is_not_finished(tmp_path: Path) -> None:
    write_recipe(tmp_path / "images")
    recipe = recipes.load_recipe(tmp_path / "images", "demo")
    path = fake_cached(tmp_path / "cache", recipe)
    (tmp_path / "cache" / f"{path.name}.sha256").unlink()
    assert images.cached_image(recipe, tmp_path / "cache") is None
    assert images.cached_images(tmp_path / "cache") == []


def test_edited_recipe_misses_cache(tmp_path: Path) -> None:
    recipe_dir = write_recipe(tmp_path / "images")
    fake_cached(tmp_path / "cache", recipes.load_recipe(tmp_path / "images", "demo"))
    (recipe_dir / "recipe.yml").write_text(VALID.replace("4\n", "6\n"))
    edited = recipes.load_recipe(tmp_path / "images", "demo")
    assert images.cached_image(edited, tmp_path / "cache") is None


def test_cached_images_lists_finished_only(tmp_path: Path) -> None:
    write_recipe(tmp_path / "images", "demo")
    write_recipe(tmp_path / "images", "base", VALID.replace("name: demo", "name: base"))
    cache = tmp_path / "cache"
    for name in ("demo", "base"):
        fake_cached(cache, recipes.load_recipe(tmp_path / "images", name))
    fake_qcow2(cache / "demo-000000000000.qcow2")  # interrupted build: no sidecar
    (cache / "notes.qcow2").write_text("not ours")
    found = images.cached_images(cache)
    assert [i.name for i in found] == ["base", "demo"]
    assert all(isinstance(i, BuiltImage) for i in found)
    assert images.cached_images(tmp_path / "missing") == []


def test_malformed_sidecar_and_header(tmp_path: Path) -> None:
    write_recipe(tmp_path / "images")
    recipe = recipes.load_recipe(tmp_path / "images", "demo")
    path = fake_cached(tmp_path / "cache", recipe)
    (tmp_path / "cache" / f"{path.name}.sha256").write_text("garbage\n")
    with pytest.raises(ImageError, match="malformed checksum file"):
        images.cached_image(recipe, tmp_path / "cache")
    path.write_bytes(b"not a qcow2 image at all, really not" * 2)
    with pytest.raises(ImageError, match="not a qcow2 image"):
        images.qcow2_virtual_size(path)


def test_build_needs_root_when_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_recipe(tmp_path / "images")
    recipe = recipes.load_recipe(tmp_path / "images", "demo")
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageError, match="needs root"):
        images.build(recipe, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend to be root with every build tool present; the real build steps are replaced."""
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    monkeypatch.setattr(images.shutil, "which", lambda tool: f"/usr/bin/{tool}")


@pytest.mark.usefixtures("as_root")
def test_failed_build_leaves_nothing_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_recipe(tmp_path / "images")
    recipe = recipes.load_recipe(tmp_path / "images", "demo")
    cache = tmp_path / "cache"
    stale = cache / ".build-demo-killed"
    stale.mkdir(parents=True)
    (stale / "disk.raw").write_bytes(b"half a disk")

    def failing_build(recipe: Recipe, workdir: Path, raw: Path, say: object) -> None:
        raw.write_bytes(b"partial")
        raise ImageError("mmdebstrap failed (exit 1)")

    monkeypatch.setattr(imagebuilder, "build_raw", failing_build)
    messages: list[str] = []
    with pytest.raises(ImageError, match="mmdebstrap failed"):
        images.build(recipe, cache, progress=messages.append)
    assert not stale.exists()
    assert any("interrupted build" in m for m in messages)
    assert sorted(p.name for p in cache.iterdir()) == [".build.lock"]
    assert images.cached_image(recipe, cache) is None


@pytest.mark.usefixtures("as_root")
def test_concurrent_build_is_refused(tmp_path: Path) -> None:
    import fcntl

    write_recipe(tmp_path / "images")
    recipe = recipes.load_recipe(tmp_path / "images", "demo")
    cache = tmp_path / "cache"
    cache.mkdir()
    with (cache / ".build.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ImageError, match="another image build is running"):
            images.build(recipe, cache, force=True)

"""Golden image commands: build and list."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from kallikratis import golden, images, paths, recipes
from kallikratis.commands.common import Context, console, console_err, emit_json, esc, json_option


@click.group()
def image() -> None:
    """Golden images: built from recipes in vm_images/, versioned by recipe hash."""


@image.command("build")
@click.argument("recipe", required=False)
@click.option("--force", is_flag=True, help="Rebuild even when the recipe is unchanged.")
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Upload into each hypervisor's storage pool (needs -i).",
)
@click.pass_context
def build(cctx: click.Context, recipe: str | None, force: bool, publish: bool) -> None:
    """Build RECIPE (default: the inventory's fleet_image). An unchanged recipe is reused."""
    ctx: Context = cctx.obj
    if recipe is None:
        recipe = ctx.declared.image if ctx.inventory_path else "debian13"
    rec = recipes.load_recipe(paths.images_dir(), recipe)
    built = images.build(
        rec,
        paths.image_cache_dir(),
        force=force,
        progress=lambda msg: console_err.print(f"image {esc(rec.name)}: {esc(msg)}"),
    )
    console.print(
        f"image {esc(built.name)} version {built.version}: {built.path} "
        f"({built.size_bytes / 2**20:.0f} MiB, sha256 {built.sha256[:16]}…)"
    )
    if publish and ctx.inventory_path is not None:
        engine = ctx.engine
        for hv in sorted(ctx.declared.hypervisors):
            be = engine.backend(hv)
            be.ensure_pool(ctx.declared.pool.name, engine_pool_xml(ctx))
            img = golden.ensure_published(
                be,
                ctx.declared.pool.name,
                rec,
                paths.image_cache_dir(),
                lambda msg: console_err.print(esc(msg)),
            )
            console.print(f"published on {esc(hv)}: {esc(img.path)}")


def engine_pool_xml(ctx: Context) -> str:
    from kallikratis import render

    return render.render("pool.xml.j2", pool=ctx.declared.pool)


@image.command("list")
@json_option
@click.pass_context
def list_(cctx: click.Context, as_json: bool) -> None:
    """Recipes, built images in the cache and, with -i, images published on each hypervisor."""
    ctx: Context = cctx.obj
    rows: list[dict[str, Any]] = []
    for name in recipes.list_recipes(paths.images_dir()):
        rec = recipes.load_recipe(paths.images_dir(), name)
        cached = images.cached_image(rec, paths.image_cache_dir())
        rows.append(
            {
                "recipe": name,
                "version": rec.version,
                "where": "cache",
                "built": cached is not None,
                "path": str(cached.path) if cached else "",
                "sha256": cached.sha256 if cached else "",
            }
        )
    if ctx.inventory_path is not None:
        for hv in sorted(ctx.declared.hypervisors):
            for img in golden.published(ctx.engine.backend(hv), ctx.declared.pool.name):
                rows.append(
                    {
                        "recipe": img.volume,
                        "version": img.version,
                        "where": hv,
                        "built": True,
                        "path": img.path,
                        "sha256": img.sha256,
                    }
                )
    if as_json:
        emit_json({"images": rows})
        return
    table = Table(title="golden images", title_justify="left")
    for col in ("recipe", "version", "where", "built", "path", "sha256"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            esc(r["recipe"]),
            r["version"],
            esc(r["where"]),
            "yes" if r["built"] else "no",
            esc(r["path"]),
            r["sha256"][:16],
        )
    console.print(table)

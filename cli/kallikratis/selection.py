"""Which municipalities a command acts on: NAMES or --all, by the same rules everywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kallikratis import model
from kallikratis.errors import UsageError


def select(
    fleet: model.Fleet, names: Iterable[str], all_: bool, *, required: bool = False
) -> tuple[model.Municipality, ...]:
    """The municipalities named, or all of them (also when none is named, unless *required*)."""
    names = tuple(names)
    if required and not names and not all_:
        raise UsageError("name the municipalities, or pass --all")
    if names and all_:
        raise UsageError("give NAMES or --all, not both")
    return fleet.select(names, all_=all_)


def select_for_destroy(
    fleet: model.Fleet, names: Iterable[str], all_: bool, orphans: Callable[[], list[str]]
) -> list[str]:
    """The slugs `destroy` removes: NAMES (municipalities or orphans) or, with --all, both.

    *orphans* (the slugs of this fleet's VMs no longer in the inventory) is asked only once
    the arguments are known to be valid.
    """
    names = list(names)
    if names and all_:
        raise UsageError("give NAMES or --all, not both")
    if not names and not all_:
        raise UsageError("name the municipalities to destroy, or pass --all")
    known = [m.slug for m in fleet.municipalities]
    orphans_ = orphans()
    slugs = known + orphans_ if all_ else names
    unknown = [n for n in slugs if n not in known and n not in orphans_]
    if unknown:
        raise UsageError(f"unknown municipality: {', '.join(unknown)}")
    return slugs

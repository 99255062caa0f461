"""The selection rules every command shares (kallikratis.selection)."""

from __future__ import annotations

import pytest
from kallikratis import model
from kallikratis.errors import UsageError
from kallikratis.selection import select, select_for_destroy
from support import SLUGS


def test_names_or_all(test_fleet: model.Fleet) -> None:
    assert [m.slug for m in select(test_fleet, [SLUGS[1]], False)] == [SLUGS[1]]
    assert select(test_fleet, [], True) == test_fleet.municipalities
    assert select(test_fleet, [], False) == test_fleet.municipalities  # read commands: all
    with pytest.raises(UsageError, match="or pass --all"):
        select(test_fleet, [], False, required=True)
    with pytest.raises(UsageError, match="not both"):
        select(test_fleet, [SLUGS[0]], True)
    with pytest.raises(UsageError, match="unknown municipality"):
        select(test_fleet, ["atlantis"], False)


def test_destroy_selection_asks_for_orphans_only_when_the_arguments_are_valid(
    test_fleet: model.Fleet,
) -> None:
    def no_hypervisor() -> list[str]:
        raise AssertionError("orphans looked up before the arguments were checked")

    for names, all_ in (([], False), ([SLUGS[0]], True)):
        with pytest.raises(UsageError):
            select_for_destroy(test_fleet, names, all_, no_hypervisor)
    assert select_for_destroy(test_fleet, [], True, lambda: ["gone"]) == [*SLUGS, "gone"]
    assert select_for_destroy(test_fleet, ["gone"], False, lambda: ["gone"]) == ["gone"]
    with pytest.raises(UsageError, match="unknown municipality: atlantis"):
        select_for_destroy(test_fleet, ["atlantis"], False, lambda: ["gone"])

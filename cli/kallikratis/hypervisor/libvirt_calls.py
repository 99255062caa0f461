"""How the libvirt backend calls libvirt: errors become HypervisorError, missing objects None."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from kallikratis.errors import HypervisorError

T = TypeVar("T")


@contextmanager
def errors(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"{what}: {exc.get_error_message()}") from exc


def or_none(lookup: Callable[[], T], *missing: int) -> T | None:
    """The object *lookup* finds, or None when libvirt says it is missing (error codes)."""
    try:
        return lookup()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in missing:
            return None
        raise

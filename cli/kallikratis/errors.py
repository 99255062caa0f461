"""One exception root for the whole package.

Library code raises these; only the CLI turns them into output and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass


class KallikratisError(Exception):
    """Base class: carries a user-facing message and the process exit code."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One problem in the inventory: where it is and what is wrong."""

    file: str
    entry: str
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.entry:
            where += f": {self.entry}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"


class InventoryError(KallikratisError):
    """The inventory is invalid; nothing was changed."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"inventory is invalid ({len(self.problems)} problem(s)):\n{lines}")


class UsageError(KallikratisError):
    """The command line asks for something that does not exist or cannot be done."""

    exit_code = 2


class HypervisorError(KallikratisError):
    """libvirt refused or failed an operation."""

    exit_code = 3


class ImageError(KallikratisError):
    """Building, finding or publishing a golden image failed."""

    exit_code = 4


class ProvisionError(KallikratisError):
    """One or more municipalities could not be brought up."""

    exit_code = 5


class LockedError(KallikratisError):
    """Another run holds some of the municipalities this run would touch; nothing was changed."""

    exit_code = 6


class Aborted(KallikratisError):
    """The user declined a confirmation."""

    exit_code = 1

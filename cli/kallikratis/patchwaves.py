"""The waves of a patch run: a canary wave, then batches; and how many failures stop the run.

Counts are given as ``N`` or ``P%`` (of the municipalities in the run), as on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kallikratis.errors import UsageError


def _count(spec: str, total: int, what: str, minimum: int) -> int:
    """``"N"`` or ``"P%"`` of *total* as a count."""
    text = spec.strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return max(minimum, math.floor(total * pct / 100 + 1e-9))
        value = int(text)
        if value < minimum:
            raise ValueError
        return value
    except ValueError:
        raise UsageError(
            f"--{what} must be a whole number >= {minimum} or a percentage like 20%, got {spec!r}"
        ) from None


def waves(slugs: Sequence[str], canary: int, batch: str) -> list[list[str]]:
    """Canary wave first (if any), then batches of the rest, in inventory order."""
    if canary < 0:
        raise UsageError(f"--canary must be >= 0, got {canary}")
    size = _count(batch, len(slugs), "batch", 1)
    out = [list(slugs[:canary])] if canary and slugs else []
    rest = list(slugs[canary:])
    out += [rest[i : i + size] for i in range(0, len(rest), size)]
    return out


def allowed_failures(max_fail: str, total: int) -> int:
    return _count(max_fail, total, "max-fail", 0)

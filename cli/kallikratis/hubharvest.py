"""`kallikratis hub harvest`: run the hub's harvester now on the hub VM, over the one SSH path
(pinned host key, like `report --publish` reaches control), and read its per-municipality
report (roles/hub writes it to /var/lib/kallikratis-hub/last-run.json after every run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest, GuestError
from kallikratis.ssh import SshTarget

SERVICE = "kallikratis-hub-harvest.service"
REPORT = "/var/lib/kallikratis-hub/last-run.json"
#: the service's own TimeoutStartSec is 30 min; a timer-started run in progress is joined
HARVEST_TIMEOUT = 1900.0
#: `systemctl start` of a oneshot unit returns when the run has finished (or joins the one running)
HARVEST_SCRIPT = f"systemctl start {SERVICE}; cat {REPORT}"


class HubError(KallikratisError):
    """The harvest could not be run on the hub, or its report is unreadable."""

    exit_code = 1


class StaleMunicipalities(KallikratisError):
    """The harvest ran, and some portals did not answer: the finding, like report's exit 5."""

    exit_code = 5


@dataclass(frozen=True)
class Outcome:
    slug: str
    new: int
    changed: int
    removed: int
    stale: bool
    error: str | None
    seconds: float
    #: HTTP requests the harvester made to the portal (0 from a harvester that did not count)
    requests: int = 0


@dataclass(frozen=True)
class HarvestReport:
    finished: str
    municipalities: tuple[Outcome, ...]

    @property
    def stale(self) -> list[str]:
        return [o.slug for o in self.municipalities if o.stale]


def parse_report(text: str) -> HarvestReport:
    """The harvester's last-run.json; HubError when it is not what the harvester writes."""
    try:
        raw: Any = json.loads(text)
        rows = tuple(
            Outcome(
                slug=str(r["slug"]),
                new=int(r["new"]),
                changed=int(r["changed"]),
                removed=int(r["removed"]),
                stale=bool(r["stale"]),
                error=None if r.get("error") is None else str(r["error"]),
                seconds=float(r.get("seconds", 0.0)),
                requests=int(r.get("requests", 0)),
            )
            for r in raw["municipalities"]
        )
        return HarvestReport(str(raw["finished"]), rows)
    except (ValueError, KeyError, TypeError) as exc:
        what = exc.__class__.__name__
        raise HubError(f"the hub's harvest report is unreadable ({what})") from None


def harvest(target: SshTarget) -> HarvestReport:
    """Run one harvest on the hub VM now and return its report."""
    try:
        out = Guest(target).run(HARVEST_SCRIPT, timeout=HARVEST_TIMEOUT)
    except GuestError as exc:
        raise HubError(f"cannot run the harvest on {target.host}: {exc.message}") from exc
    return parse_report(out)

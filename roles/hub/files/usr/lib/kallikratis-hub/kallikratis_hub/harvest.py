"""One harvest of every configured portal: bounded concurrency, one time budget per
municipality, a failure of one (down, timeout, 500, garbage) marks it stale and the others go
on; then the static outputs and the public copy of the database are rewritten."""

from __future__ import annotations

import fcntl
import json
import logging
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kallikratis_hub import datasette, wordpress
from kallikratis_hub.fetch import Cached, Fetcher, FetchError, Limits, opener
from kallikratis_hub.model import ConfigError, Outcome, Portal, Snapshot
from kallikratis_hub.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    hub_url: str  # https://hub.example.gr/
    title: str
    description: str
    publisher: str  # who runs the hub (the region)
    state_dir: Path
    public_dir: Path
    portals: tuple[Portal, ...]
    limits: Limits = field(default_factory=Limits)
    workers: int = 8
    ca_file: str | None = None
    timezone: str = "Europe/Athens"
    catalog_page_size: int = 1000
    feed_size: int = 50

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            portals = tuple(
                Portal.from_config(p, f"{path}: portals[{i}]") for i, p in enumerate(raw["portals"])
            )
            if len({p.slug for p in portals}) != len(portals):
                raise ConfigError(f"{path}: a slug appears twice in portals")
            return cls(
                hub_url=str(raw["hub_url"]).rstrip("/") + "/",
                title=str(raw["title"]),
                description=str(raw["description"]),
                publisher=str(raw["publisher"]),
                state_dir=Path(raw["state_dir"]),
                public_dir=Path(raw["public_dir"]),
                portals=portals,
                limits=Limits.from_config(raw.get("limits", {})),
                workers=max(1, min(int(raw.get("workers", 8)), 64)),
                ca_file=raw.get("ca_file") or None,
                timezone=str(raw.get("timezone", "Europe/Athens")),
                catalog_page_size=max(1, int(raw.get("catalog_page_size", 1000))),
                feed_size=max(1, int(raw.get("feed_size", 50))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: missing or invalid field {exc}") from None


@dataclass
class _Job:
    portal: Portal
    snap: Snapshot | None = None
    cache: dict[str, Cached] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    requests: int = 0


def _fetch_one(cfg: Config, job: _Job, known: Any, now_local: str) -> _Job:
    old_cache = dict(job.cache)
    job.cache = {}
    context = ssl.create_default_context()  # the system's roots: portals with ACME certificates
    if cfg.ca_file:
        context.load_verify_locations(cafile=cfg.ca_file)  # and the fleet CA
    f = Fetcher(
        cfg.limits,
        opener(context).open,
        cache_get=old_cache.get,
        cache_put=job.cache.__setitem__,
    )
    snap = Snapshot()
    try:
        if "portal" in job.portal.modules:
            wordpress.harvest(f, job.portal, known, now_local, snap)
        if "opendata" in job.portal.modules:
            datasette.harvest(f, job.portal, snap)
        job.snap = snap
    except FetchError as exc:
        job.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a tenant's garbage must never stop the others
        job.error = f"unexpected answer ({exc.__class__.__name__}: {exc})"
    job.seconds = time.monotonic() - f.started
    job.requests = f.requests
    return job


@contextmanager
def run_lock(state_dir: Path) -> Iterator[None]:
    with open(state_dir / "harvest.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("another harvest is running") from None
        yield


def local_now(cfg: Config, now: datetime) -> str:
    try:
        zone: Any = ZoneInfo(cfg.timezone)
    except (KeyError, ValueError, OSError):
        zone = UTC
    return now.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def run(cfg: Config, now: datetime | None = None) -> list[Outcome]:
    """Harvest every portal, write the outputs; one Outcome per municipality."""
    from kallikratis_hub import outputs

    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(cfg.state_dir):
        store = Store(cfg.state_dir / "hub.db")
        try:
            store.sync_portals(cfg.portals)
            now_local = local_now(cfg, now)
            jobs = [_Job(p, cache=store.cache_for(p.url)) for p in cfg.portals]
            knowns = {p.slug: store.known(p.slug) for p in cfg.portals}
            outcomes = []
            with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
                done = pool.map(
                    lambda j: _fetch_one(cfg, j, knowns[j.portal.slug], now_local), jobs
                )
                for job in done:
                    outcomes.append(_record(store, job, stamp))
            outputs.write_all(store.conn, cfg, now)
            store.publish(cfg.state_dir / "public.db")
        finally:
            store.close()
        report = {"finished": stamp, "municipalities": [o.as_dict() for o in outcomes]}
        _write_json(cfg.state_dir / "last-run.json", report)
    return outcomes


def _record(store: Store, job: _Job, stamp: str) -> Outcome:
    slug = job.portal.slug
    if job.snap is None:
        log.warning("%s: stale: %s", slug, job.error)
        store.mark_stale(slug, job.error or "failed", stamp)
        return Outcome(
            slug, stale=True, error=job.error, seconds=job.seconds, requests=job.requests
        )
    got = store.apply(job.portal, job.snap, job.cache, stamp)
    return Outcome(slug, got.new, got.changed, got.removed, False, None, job.seconds, job.requests)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)

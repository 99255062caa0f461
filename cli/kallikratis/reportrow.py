"""One municipality's row of the scorecard: its checks (see :mod:`kallikratis.report`),
figures and lag flags, computed from a libvirt status row, the journal and Prometheus."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kallikratis.provision import StatusRow
from kallikratis.reportmetrics import DAY, Metrics

AVAILABILITY_TARGET = 0.99
TLS_MIN_DAYS = 21.0
PENDING_MAX_DAYS = 7.0
MAINTENANCE_MAX_HOURS = 1.0
DISK_MAX_USED = 0.85
NEWS_MAX_DAYS = 90.0
GREEN, RED, UNKNOWN = "green", "red", "unknown"
#: the use figures, in column order: name -> the query it comes from
USE = (
    "requests_30d",
    "posts",
    "last_post_days",
    "consultations_open",
    "consultations_closed",
    "comments",
    "datasets",
    "dataset_rows",
    "learners",
    "sessions",
)


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # green | red | unknown
    detail: str = ""


@dataclass(frozen=True)
class Row:
    slug: str
    display_name: str
    modules: tuple[str, ...]
    state: str
    checks: tuple[Check, ...]
    figures: dict[str, Any] = field(default_factory=dict)
    use: dict[str, float | None] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @property
    def overall(self) -> str:
        states = {c.state for c in self.checks}
        return RED if RED in states else UNKNOWN if UNKNOWN in states else GREEN

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "display_name": self.display_name,
            "modules": list(self.modules),
            "state": self.state,
            "overall": self.overall,
            "green": self.overall == GREEN,
            "checks": {c.name: {"state": c.state, "detail": c.detail} for c in self.checks},
            "flags": list(self.flags),
            **self.figures,
            "use": dict(self.use),
        }


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders "6.8.1" after "6.8" and "0.19.2" after "0.9.10"; text parts after numbers."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[a-z]+", version))


def newest_versions(metrics: Metrics) -> dict[str, str]:
    """component -> the newest version any municipality runs (the image excepted)."""
    newest: dict[str, str] = {}
    for samples in metrics.instant.get("versions", {}).values():
        for s in samples:
            comp, ver = s.labels.get("component", ""), s.labels.get("version", "")
            if not comp or comp == "image" or not ver:
                continue
            if comp not in newest or version_key(ver) > version_key(newest[comp]):
                newest[comp] = ver
    return newest


def _check(name: str, ok: bool | None, detail: str = "") -> Check:
    return Check(name, UNKNOWN if ok is None else GREEN if ok else RED, detail)


def _unknown(name: str, metrics: Metrics, query: str) -> Check | None:
    if metrics.known(query):
        return None
    return Check(name, UNKNOWN, "Prometheus: " + metrics.failed.get(query, "not read"))


def _age_check(
    name: str, metrics: Metrics, query: str, slug: str, limit: float, now: float, what: str
) -> Check:
    """Red when the "since" timestamp of *query* is older than *limit* seconds."""
    missing = _unknown(name, metrics, query)
    if missing:
        return missing
    since = metrics.value(query, slug)
    if since is None:
        return Check(name, UNKNOWN, "no data")
    if since <= 0:
        return Check(name, GREEN, f"no {what}")
    age = now - since
    ago = f"{age / DAY:.1f} days" if age >= 2 * DAY else f"{age / 3600:.1f} h"
    return _check(name, age <= limit, f"{what} for {ago}")


def _portal(metrics: Metrics, slug: str) -> Check:
    missing = _unknown("portal", metrics, "probe_up")
    if missing:
        return missing
    probes = metrics.samples("probe_up", slug)
    if not probes:
        return Check("portal", RED, "not probed")
    down = sorted(s.labels.get("module", "?") for s in probes if s.value != 1)
    return _check("portal", not down, "down: " + ", ".join(down) if down else "")


def _threshold(name: str, metrics: Metrics, query: str, slug: str, ok: Any, fmt: str) -> Check:
    missing = _unknown(name, metrics, query)
    if missing:
        return missing
    value = metrics.value(query, slug)
    if value is None:
        return Check(name, UNKNOWN, "no data")
    return _check(name, bool(ok(value)), fmt.format(value))


def _journal_check(name: str, last: tuple[str, str] | None, known: bool) -> Check:
    if not known:
        return Check(name, UNKNOWN, "journal not read")
    if last is None:
        return Check(name, GREEN, "never")
    return _check(name, last[1] != "failed", f"{last[1]} {last[0][:10]}")


def _stack(metrics: Metrics, slug: str, newest: dict[str, str]) -> tuple[Check, dict[str, str]]:
    missing = _unknown("stack", metrics, "versions")
    mine = {
        s.labels.get("component", ""): s.labels.get("version", "")
        for s in metrics.samples("versions", slug)
    }
    if missing:
        return missing, mine
    apps = {c: v for c, v in mine.items() if c and c != "image"}
    if not apps:
        return Check("stack", UNKNOWN, "no versions reported"), mine
    behind = [f"{c} {v} < {newest[c]}" for c, v in sorted(apps.items()) if v != newest.get(c, v)]
    return _check("stack", not behind, "; ".join(behind)), mine


def _metric_checks(metrics: Metrics, slug: str, now: float) -> tuple[Check, ...]:
    """The checks read from Prometheus (node exporter, blackbox, our collectors)."""
    week = PENDING_MAX_DAYS * DAY
    return (
        _threshold("node", metrics, "node_up", slug, lambda v: v == 1, "up={:g}"),
        _portal(metrics, slug),
        _threshold("availability", metrics, "availability_30d", slug,
                   lambda v: v >= AVAILABILITY_TARGET, "{:.2%} over 30 days"),
        _threshold("tls", metrics, "tls_days", slug, lambda v: v >= TLS_MIN_DAYS,
                   "{:.0f} days left"),
        _age_check("security", metrics, "security_pending_since", slug, week, now,
                   "security updates pending"),
        _age_check("reboot", metrics, "reboot_since", slug, week, now, "reboot required"),
        _age_check("maintenance", metrics, "maintenance_since", slug,
                   MAINTENANCE_MAX_HOURS * 3600, now, "maintenance mode"),
        _threshold("disk", metrics, "disk_used", slug, lambda v: v < DISK_MAX_USED,
                   "{:.0%} used"),
    )  # fmt: skip


def build_row(
    s: StatusRow,
    metrics: Metrics,
    *,
    patch: tuple[str, str] | None,
    verify: tuple[str, str] | None,
    current_image: str,
    current_stack: dict[str, str],
    now: float,
    journal: bool = True,
) -> Row:
    """*journal*: False when the journal could not be read (patch and verify unknown)."""
    slug = s.slug
    live = s.state != "unknown"
    image = s.image or _image_of(metrics, slug)
    stack, versions = _stack(metrics, slug, current_stack)
    checks = (
        _check("state", s.state == "running" if live else None, s.state),
        _check("drift", not s.drift if live else None, "; ".join(s.drift)),
        *_metric_checks(metrics, slug, now),
        _check(
            "image",
            (image == current_image) if image and current_image else None,
            f"{image or '?'} (current {current_image or '?'})",
        ),
        stack,
        _journal_check("patch", patch, journal),
        _journal_check("verify", verify, journal),
    )
    figures = _figures(metrics, slug, now, image, versions, patch, verify)
    use = _use(metrics, slug, now)
    flags = _flags(s.modules, use, checks)
    return Row(slug, s.display_name, s.modules, s.state, checks, figures, use, flags)


def _image_of(metrics: Metrics, slug: str) -> str:
    for sample in metrics.samples("versions", slug):
        if sample.labels.get("component") == "image":
            return sample.labels.get("version", "")
    return ""


def _count(metrics: Metrics, query: str, slug: str, **labels: str) -> float | None:
    if not metrics.known(query):
        return None
    return metrics.value(query, slug, **labels)


def _figures(
    metrics: Metrics,
    slug: str,
    now: float,
    image: str,
    versions: dict[str, str],
    patch: tuple[str, str] | None,
    verify: tuple[str, str] | None,
) -> dict[str, Any]:
    def since_days(query: str) -> float | None:
        value = _count(metrics, query, slug)
        return None if value is None else round((now - value) / DAY, 1) if value > 0 else 0.0

    alerts = None
    if metrics.known("alerts"):
        alerts = sorted({a.labels.get("alertname", "?") for a in metrics.samples("alerts", slug)})
    availability = _count(metrics, "availability_30d", slug)
    tls = _count(metrics, "tls_days", slug)
    disk = _count(metrics, "disk_used", slug)
    return {
        "availability_30d": None if availability is None else round(availability, 4),
        "tls_days": None if tls is None else round(tls, 1),
        "security_updates_pending": _count(metrics, "security_pending", slug),
        "updates_pending": _count(metrics, "upgrades_pending", slug),
        "security_updates_pending_days": since_days("security_pending_since"),
        "reboot_required_days": since_days("reboot_since"),
        "maintenance_days": since_days("maintenance_since"),
        "disk_used": None if disk is None else round(disk, 3),
        "image": image,
        "versions": {c: v for c, v in sorted(versions.items()) if c != "image"},
        "last_patch": patch[0] if patch else None,
        "last_patch_result": patch[1] if patch else None,
        "last_verify": verify[0] if verify else None,
        "last_verify_result": verify[1] if verify else None,
        "alerts": alerts,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(round(value))


def _use(metrics: Metrics, slug: str, now: float) -> dict[str, float | None]:
    last_post = _count(metrics, "last_post", slug)
    return {
        "requests_30d": _rounded(_count(metrics, "requests_30d", slug)),
        "posts": _count(metrics, "posts", slug),
        "last_post_days": None
        if last_post is None or last_post <= 0
        else round((now - last_post) / DAY, 1),
        "consultations_open": _count(metrics, "consultations", slug, state="open"),
        "consultations_closed": _count(metrics, "consultations", slug, state="closed"),
        "comments": _count(metrics, "comments", slug),
        "datasets": _count(metrics, "datasets", slug),
        "dataset_rows": _count(metrics, "dataset_rows", slug),
        "learners": _count(metrics, "learners", slug),
        "sessions": _count(metrics, "sessions", slug),
    }


def _flags(
    modules: tuple[str, ...], use: dict[str, float | None], checks: tuple[Check, ...]
) -> tuple[str, ...]:
    flags = []
    if "portal" in modules:
        posts, last = use["posts"], use["last_post_days"]
        if posts is not None and (posts == 0 or (last is not None and last > NEWS_MAX_DAYS)):
            flags.append("no-news-90d")
        opened, closed = use["consultations_open"], use["consultations_closed"]
        known = opened is not None or closed is not None
        if known and (opened or 0) + (closed or 0) == 0:
            flags.append("no-consultation")
    if any(c.name == "image" and c.state == RED for c in checks):
        flags.append("outdated-image")
    return tuple(flags)

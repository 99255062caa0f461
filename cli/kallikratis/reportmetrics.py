"""What the scorecard reads from Prometheus: the queries, run in parallel, sorted by municipality.

The query strings are the contract with the recorded fixtures (tests/unit/data/prometheus/,
``scripts/record-prometheus``): change one here and record it again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kallikratis.prometheus_api import Prometheus, PrometheusError, Sample, Series

DAY = 86400.0
#: instant queries: name -> PromQL; every series carries the label ``municipality``
QUERIES: Mapping[str, str] = {
    "node_up": 'up{job="node"}',
    "probe_up": 'probe_success{job="blackbox"}',
    "availability_30d": 'avg_over_time(probe_success{job="blackbox",module="site"}[30d])',
    "tls_days": (
        'min by (municipality) (probe_ssl_earliest_cert_expiry{job="blackbox"} - time()) / 86400'
    ),
    "security_pending": "kallikratis_security_upgrades_pending",
    "upgrades_pending": "kallikratis_upgrades_pending",
    "security_pending_since": "kallikratis_security_upgrades_pending_since_timestamp_seconds",
    "reboot_since": "kallikratis_reboot_required_since_timestamp_seconds",
    "maintenance_since": "kallikratis_maintenance_since_timestamp_seconds",
    "disk_used": (
        '1 - node_filesystem_avail_bytes{job="node",mountpoint="/"}'
        ' / node_filesystem_size_bytes{job="node",mountpoint="/"}'
    ),
    "versions": "kallikratis_version_info",
    "alerts": 'ALERTS{alertstate="firing"}',
    "requests_30d": "sum by (municipality) (increase(kallikratis_http_requests_total[30d]))",
    "posts": "kallikratis_portal_posts_published",
    "last_post": "kallikratis_portal_last_post_timestamp_seconds",
    "consultations": "kallikratis_consultations",
    "comments": "kallikratis_consultation_comments",
    "datasets": "kallikratis_datasets",
    "dataset_rows": "kallikratis_dataset_rows",
    "learners": "kallikratis_kolibri_learners",
    "sessions": "kallikratis_kolibri_sessions",
    "now": "time()",
}
#: range queries over the last 30 days: name -> (PromQL, step in seconds)
RANGE_QUERIES: Mapping[str, tuple[str, float]] = {
    "availability_daily": ('avg_over_time(probe_success{job="blackbox",module="site"}[1d])', DAY),
    "requests_daily": (
        "sum by (municipality) (increase(kallikratis_http_requests_total[1d]))",
        DAY,
    ),
    "pending_over_time": ("sum(kallikratis_upgrades_pending)", DAY / 4),
    "security_pending_over_time": ("sum(kallikratis_security_upgrades_pending)", DAY / 4),
}
RANGE_DAYS = 30


@dataclass
class Metrics:
    """The answers: name -> municipality -> samples; failures by name (the columns unknown)."""

    instant: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    ranges: dict[str, list[Series]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    now: float = 0.0

    def known(self, name: str) -> bool:
        return name in self.instant or name in self.ranges

    def samples(self, name: str, slug: str) -> list[Sample]:
        return self.instant.get(name, {}).get(slug, [])

    def value(self, name: str, slug: str, **labels: str) -> float | None:
        """The first sample of *slug* matching *labels*; None when unknown or absent."""
        for s in self.samples(name, slug):
            if all(s.labels.get(k) == v for k, v in labels.items()) and not math.isnan(s.value):
                return s.value
        return None


def _by_municipality(samples: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.labels.get("municipality", ""), []).append(s)
    return out


def fetch(prom: Prometheus, now: float, workers: int = 6) -> Metrics:
    """Every query, a few at a time. Unreachable: PrometheusError (nothing is known).

    A single query Prometheus refuses is recorded in ``failed`` and its column is unknown.
    """
    metrics = Metrics(now=now)
    start = now - RANGE_DAYS * DAY

    def instant(name: str) -> tuple[str, list[Sample] | str]:
        try:
            return name, prom.query(QUERIES[name], at=now)
        except PrometheusError as exc:
            if "cannot reach" in exc.message:
                raise
            return name, exc.message

    def ranged(name: str) -> tuple[str, list[Series] | str]:
        expr, step = RANGE_QUERIES[name]
        try:
            return name, prom.query_range(expr, start, now, step)
        except PrometheusError as exc:
            if "cannot reach" in exc.message:
                raise
            return name, exc.message

    # one probe first: an unreachable server costs one timeout, not one per query
    first, answer = instant("now")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        inst = list(pool.map(instant, [n for n in QUERIES if n != "now"]))
        rng = list(pool.map(ranged, list(RANGE_QUERIES)))
    for name, got in [(first, answer), *inst]:
        if isinstance(got, str):
            metrics.failed[name] = got
        else:
            metrics.instant[name] = _by_municipality(got)
    for rname, rgot in rng:
        if isinstance(rgot, str):
            metrics.failed[rname] = rgot
        else:
            metrics.ranges[rname] = rgot
    return metrics

"""A small client for Prometheus' HTTP API (``/api/v1/query`` and ``/api/v1/query_range``).

Stdlib only (urllib), a timeout on every request, and one error type: a Prometheus that cannot
be reached or answers something else than its documented JSON raises :class:`PrometheusError`.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kallikratis.errors import KallikratisError

DEFAULT_TIMEOUT = 10.0


class PrometheusError(KallikratisError):
    """Prometheus could not be reached, or its answer was not a result."""

    exit_code = 1


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value (NaN stays NaN)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: labels and (unix time, value) points."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


class Prometheus:
    """Read-only access to one Prometheus server, e.g. ``http://10.42.0.5:9090``."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PrometheusError(f"not an http(s) URL of a Prometheus server: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, endpoint: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as exc:  # Prometheus' 400/422 carry an error JSON
            body = exc.read()
            if not body:
                raise PrometheusError(f"{self.url}: HTTP {exc.code} on {endpoint}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"{self.url}: cannot reach Prometheus: {reason}") from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise PrometheusError(f"{self.url}: {endpoint} did not answer JSON") from exc
        if not isinstance(answer, dict) or answer.get("status") != "success":
            why = answer.get("error", "no status") if isinstance(answer, dict) else "not an object"
            raise PrometheusError(f"{self.url}: {endpoint} {params.get('query')!r}: {why}")
        data = answer.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise PrometheusError(f"{self.url}: {endpoint} answered no result list")
        return data

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query; a scalar result comes back as one sample without labels."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("query", params)
        if data.get("resultType") == "scalar":
            return [Sample({}, _number(data["result"][1]))]
        return [
            Sample(dict(item.get("metric", {})), _number(item.get("value", (0, None))[1]))
            for item in data["result"]
        ]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query from *start* to *end* (unix seconds), one point per *step* seconds."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._get("query_range", params)
        return [
            Series(
                dict(item.get("metric", {})),
                tuple((float(t), _number(v)) for t, v in item.get("values", [])),
            )
            for item in data["result"]
        ]

"""The whole alert path on loopback, with the monitoring role's rendered configs and the real
daemons (Debian's prometheus and prometheus-alertmanager, the role's alert log receiver):
a municipality whose node exporter serves the metrics role's real output (maintenance mode on
for two hours) and one whose node exporter is down. Within seconds (lab durations) the alert
history holds MaintenanceModeTooLong for the first and TargetDown for the second, and nothing
else. Bounded: every process is stopped, at most 90 s of waiting."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from role_render import CONTROL_VARS, ROLES, render

sys.path.insert(0, str(ROLES / "monitoring/files/usr/local/lib/kallikratis-monitoring"))
sys.path.insert(0, str(ROLES / "metrics/files/usr/local/lib/kallikratis-metrics"))

import alert_log  # noqa: E402
import collect  # noqa: E402
import system  # noqa: E402
import textfile  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

pytestmark = pytest.mark.skipif(
    not (Path(PROMETHEUS).is_file() and Path(ALERTMANAGER).is_file()),
    reason="prometheus / prometheus-alertmanager are not installed (scripts/system-packages.txt)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(server: HTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _exporter(text: str) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return HTTPServer(("127.0.0.1", 0), Handler)


@contextlib.contextmanager
def _daemon(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _maintenance_metrics(tmp_path: Path) -> str:
    """What the metrics role's collector writes for a VM in maintenance for two hours."""
    flag = tmp_path / "maintenance"
    flag.touch()
    two_hours_ago = time.time() - 7200
    os.utime(flag, (two_hours_ago, two_hours_ago))
    return textfile.render(collect.FAMILIES, system.maintenance(flag))


def _alerts(log: Path) -> set[tuple[str, str, str]]:
    found = set()
    if log.exists():
        for line in log.read_text().splitlines():
            payload = json.loads(line)
            for alert in payload.get("alerts", []):
                labels = alert["labels"]
                found.add((alert["status"], labels["alertname"], labels.get("municipality", "")))
    return found


def test_alerts_reach_the_alert_log(tmp_path: Path) -> None:
    am_port, prom_port, dead_port = _free_port(), _free_port(), _free_port()
    alerts = tmp_path / "alerts.jsonl"
    receiver = HTTPServer(("127.0.0.1", 0), alert_log.make_handler(alerts, 1 << 20))
    exporter = _exporter(_maintenance_metrics(tmp_path))
    control = _exporter("")  # control's own node exporter: up, nothing to alert on
    with (
        _serving(receiver) as log_port,
        _serving(exporter) as node_port,
        _serving(control) as control_port,
    ):
        lab = {
            "monitoring_alert_log_listen_port": log_port,
            "monitoring_alertmanager_listen": f"127.0.0.1:{am_port}",
            "monitoring_group_wait": "1s",
            "monitoring_group_interval": "1s",
            "monitoring_scrape_interval": "1s",
            "monitoring_evaluation_interval": "1s",
            "monitoring_target_down_for": "2s",
            "monitoring_maintenance_max_age": "1h",
            "monitoring_targets_dir": str(tmp_path / "sd"),
            "monitoring_rules_file": str(tmp_path / "rules.yml"),
        }
        (tmp_path / "rules.yml").write_text(
            render(
                "monitoring", "etc/prometheus/rules/kallikratis.rules.yml.j2", CONTROL_VARS, **lab
            )
        )
        (tmp_path / "sd" / "node").mkdir(parents=True)
        (tmp_path / "sd" / "blackbox").mkdir()
        ports = (node_port, dead_port)
        for target, port in zip(CONTROL_VARS["kallikratis_monitoring_targets"], ports, strict=True):
            text = render(
                "monitoring",
                "etc/prometheus/kallikratis.d/node.yml.j2",
                CONTROL_VARS,
                monitoring_target=target | {"ip": "127.0.0.1"},
                monitoring_node_exporter_port=port,
            )
            (tmp_path / "sd" / "node" / f"{target['slug']}.yml").write_text(text)
        (tmp_path / "prometheus.yml").write_text(
            render(
                "monitoring",
                "etc/prometheus/prometheus.yml.j2",
                CONTROL_VARS,
                monitoring_node_exporter_port=control_port,
                **lab,
            )
        )
        (tmp_path / "alertmanager.yml").write_text(
            render("monitoring", "etc/prometheus/alertmanager.yml.j2", CONTROL_VARS, **lab)
        )
        am_argv = [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}"]
        am_argv += [
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
        ]
        am_argv += ["--cluster.listen-address="]
        prom_argv = [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}"]
        prom_argv += [f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
        prom_argv += [f"--web.listen-address=127.0.0.1:{prom_port}"]
        with (
            _daemon(am_argv, tmp_path / "alertmanager.log") as am,
            _daemon(prom_argv, tmp_path / "prometheus.log") as prom,
        ):
            wanted = {
                ("firing", "MaintenanceModeTooLong", "hersonissos"),
                ("firing", "TargetDown", "minoa-pediada"),
            }
            deadline = time.monotonic() + 90
            while not wanted <= _alerts(alerts) and time.monotonic() < deadline:
                assert am.poll() is None, (tmp_path / "alertmanager.log").read_text()
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.5)
            time.sleep(3)  # a few more evaluations and notifications: nothing else may come
    got = _alerts(alerts)
    assert wanted <= got, (got, (tmp_path / "prometheus.log").read_text()[-2000:])
    # the healthy target is up and nothing else fired (e.g. no TargetDown for hersonissos)
    assert got == wanted, got

"""The monitoring and metrics roles' rendered configs, checked by the real tools: Prometheus
(`promtool check config`), Alertmanager (`amtool check-config`), the blackbox exporter
(`--config.check`), the file_sd target files, the systemd units (`systemd-analyze verify`),
and the alert log receiver run on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from role_render import CONTROL_VARS, ROLES, render

sys.path.insert(0, str(ROLES / "monitoring/files/usr/local/lib/kallikratis-monitoring"))

import alert_log  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
BLACKBOX = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
TARGETS = CONTROL_VARS["kallikratis_monitoring_targets"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _prometheus(tmp_path: Path, **extra: Any) -> Path:
    rules = tmp_path / "kallikratis.rules.yml"
    rules.write_text(
        render("monitoring", "etc/prometheus/rules/kallikratis.rules.yml.j2", CONTROL_VARS)
    )
    text = render(
        "monitoring",
        "etc/prometheus/prometheus.yml.j2",
        CONTROL_VARS,
        monitoring_rules_file=str(rules),
        monitoring_targets_dir=str(tmp_path / "kallikratis.d"),
        **extra,
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    return path


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    path = _prometheus(tmp_path)
    proc = _run([PROMTOOL, "check", "config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"node", "control", "blackbox"}
    # a tenant's textfile cannot overwrite its municipality label; only control's own files
    # (the controller's patch results) keep theirs
    assert not jobs["node"].get("honor_labels") and jobs["control"]["honor_labels"] is True
    assert jobs["control"]["static_configs"][0]["labels"]["municipality"] == "control"
    # every VM's node exporter answers to up{job="node"}, control's too
    assert jobs["control"]["relabel_configs"] == [{"target_label": "job", "replacement": "node"}]
    assert jobs["blackbox"]["relabel_configs"][-1]["replacement"] == "127.0.0.1:9115"


def test_lab_intervals_are_valid(tmp_path: Path) -> None:
    """The lab scrapes and probes every few seconds: still a valid config (no timeout longer
    than its interval)."""
    lab = {"monitoring_scrape_interval": "5s", "monitoring_probe_interval": "5s"}
    path = _prometheus(tmp_path, **lab)
    proc = _run([PROMTOOL, "check", "config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_refuses_a_broken_prometheus_config(tmp_path: Path) -> None:
    path = _prometheus(tmp_path, monitoring_scrape_interval="often")
    assert _run([PROMTOOL, "check", "config", str(path)]).returncode != 0


def test_prometheus_arguments_bound_memory_and_disk() -> None:
    args = render("monitoring", "etc/default/prometheus.j2", CONTROL_VARS)
    assert "--web.listen-address=192.168.150.5:9090" in args
    assert "--storage.tsdb.retention.time=60d" in args
    assert "--storage.tsdb.retention.size=1GB" in args
    alertmanager = render("monitoring", "etc/default/prometheus-alertmanager.j2", CONTROL_VARS)
    assert "--web.listen-address=127.0.0.1:9093" in alertmanager
    assert '--cluster.listen-address="' in alertmanager  # no gossip port
    blackbox = render("monitoring", "etc/default/prometheus-blackbox-exporter.j2", CONTROL_VARS)
    assert "--web.listen-address=127.0.0.1:9115" in blackbox


@pytest.mark.parametrize(
    ("extra", "webhooks", "emails"),
    [
        ({}, 1, 0),
        ({"kallikratis_alert_webhook_url": "https://hooks.example.org/kallikratis"}, 2, 0),
        (
            {
                "kallikratis_alert_email": "ops@example.org",
                "kallikratis_alert_smtp_smarthost": "mail.example.org:587",
            },
            1,
            1,
        ),
    ],
    ids=["alert-log-only", "webhook", "email"],
)
def test_alertmanager_config_passes_amtool(
    tmp_path: Path, extra: dict[str, str], webhooks: int, emails: int
) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        render("monitoring", "etc/prometheus/alertmanager.yml.j2", CONTROL_VARS | extra)
    )
    proc = _run([AMTOOL, "check-config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(path.read_text())
    (receiver,) = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    assert receiver["webhook_configs"][0]["url"] == "http://127.0.0.1:9099/"
    assert len(receiver["webhook_configs"]) == webhooks
    assert len(receiver.get("email_configs", [])) == emails
    if emails:
        assert config["global"]["smtp_smarthost"] == "mail.example.org:587"


def test_amtool_refuses_email_without_a_smarthost(tmp_path: Path) -> None:
    """What the role's input check prevents: amtool itself would refuse it too."""
    path = tmp_path / "alertmanager.yml"
    extra = {"kallikratis_alert_email": "ops@example.org"}
    path.write_text(
        render("monitoring", "etc/prometheus/alertmanager.yml.j2", CONTROL_VARS | extra)
    )
    assert _run([AMTOOL, "check-config", str(path)]).returncode != 0


def test_blackbox_config_passes_its_check(tmp_path: Path) -> None:
    path = tmp_path / "blackbox.yml"
    path.write_text(render("monitoring", "etc/prometheus/blackbox.yml.j2", CONTROL_VARS))
    proc = _run([BLACKBOX, "--config.check", f"--config.file={path}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    module = yaml.safe_load(path.read_text())["modules"]["https_fleet"]
    assert module["http"]["tls_config"]["ca_file"] == "/etc/prometheus/fleet-ca.crt"
    broken = tmp_path / "broken.yml"
    broken.write_text(path.read_text().replace("fail_if_not_ssl", "fail_if_not_sll"))
    assert _run([BLACKBOX, "--config.check", f"--config.file={broken}"]).returncode != 0


def test_file_sd_targets_label_each_municipality(tmp_path: Path) -> None:
    """The target files as Prometheus reads them: promtool checks them through a config."""
    sd = tmp_path / "kallikratis.d"
    for kind in ("node", "blackbox"):
        (sd / kind).mkdir(parents=True)
        for target in TARGETS:
            text = render(
                "monitoring",
                f"etc/prometheus/kallikratis.d/{kind}.yml.j2",
                CONTROL_VARS,
                monitoring_target=target,
            )
            (sd / kind / f"{target['slug']}.yml").write_text(text)
    node = yaml.safe_load((sd / "node" / "hersonissos.yml").read_text())
    assert node == [{"targets": ["192.168.150.10:9100"], "labels": {"municipality": "hersonissos"}}]
    probes = yaml.safe_load((sd / "blackbox" / "minoa-pediada.yml").read_text())
    assert [(p["labels"]["module"], p["targets"]) for p in probes] == [
        ("site", ["https://minoa-pediada.crete.kallikratis.test/"]),
        ("opendata", ["https://minoa-pediada.crete.kallikratis.test/data/"]),
    ]
    full = yaml.safe_load((sd / "blackbox" / "hersonissos.yml").read_text())
    assert [p["labels"]["module"] for p in full] == ["site", "portal", "opendata", "education"]
    assert full[3]["targets"] == ["https://hersonissos.crete.kallikratis.test/learn/"]
    # promtool check config reads the file_sd files and validates them
    path = _prometheus(tmp_path)
    proc = _run([PROMTOOL, "check", "config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sd / "node" / "bad.yml").write_text("- targets: [1.2.3.4:9100]\n  labels: {'bad label': x}\n")
    assert _run([PROMTOOL, "check", "config", str(path)]).returncode != 0


def _systemd_verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_units_verify(tmp_path: Path) -> None:
    metrics_vars = {"kallikratis_modules": ["portal"], "ansible_managed": "unit test"}
    unit = {
        "name": "kallikratis-metrics",
        "collectors": ["maintenance", "versions"],
        "interval": "5min",
    }
    for suffix in ("service", "timer"):
        text = render(
            "metrics",
            f"etc/systemd/system/kallikratis-metrics.{suffix}.j2",
            metrics_vars | {"kallikratis_maintenance_flag": "/etc/kallikratis/maintenance"},
            metrics_unit=unit,
        )
        (tmp_path / f"kallikratis-metrics.{suffix}").write_text(text)
    (tmp_path / "kallikratis-alert-log.service").write_text(
        render("monitoring", "etc/systemd/system/kallikratis-alert-log.service.j2", CONTROL_VARS)
    )
    dropin = tmp_path / "prometheus.service.d"
    dropin.mkdir()
    (tmp_path / "prometheus.service").write_text(
        "[Service]\nExecStart=/usr/bin/prometheus $ARGS\nRestart=on-abnormal\n"
    )
    (dropin / "kallikratis.conf").write_text(
        render(
            "monitoring",
            "etc/systemd/system/prometheus.service.d/kallikratis.conf.j2",
            CONTROL_VARS,
        )
    )
    for name in (
        "kallikratis-metrics.service",
        "kallikratis-alert-log.service",
        "prometheus.service",
    ):
        proc = _systemd_verify(tmp_path / name)
        # verify also says the script is missing here: only the unit's syntax counts
        bad = [
            line
            for line in (proc.stdout + proc.stderr).splitlines()
            if "Unknown" in line or "Invalid" in line or "Failed to parse" in line
        ]
        assert not bad, bad
    service = (tmp_path / "kallikratis-metrics.service").read_text()
    assert "collect.py --config /etc/kallikratis/metrics.json maintenance versions\n" in service
    assert "LogsDirectory=kallikratis\n" in (tmp_path / "kallikratis-alert-log.service").read_text()


def test_metrics_config_names_every_path() -> None:
    text = render(
        "metrics",
        "etc/kallikratis/metrics.json.j2",
        {
            "kallikratis_modules": ["portal", "education"],
            "kallikratis_maintenance_flag": "/etc/kallikratis/maintenance",
        },
    )
    config = json.loads(text)
    assert config["modules"] == ["portal", "education"]
    assert config["textfile_dir"] == "/var/lib/prometheus/node-exporter"
    assert config["opendata_database"] == "/var/lib/opendata/opendata.db"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    log = tmp_path / "alerts.jsonl"
    server = HTTPServer(("127.0.0.1", 0), alert_log.make_handler(log, 2048))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], log
    finally:
        server.shutdown()
        server.server_close()


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_alert_log_appends_one_json_line_per_notification(receiver: tuple[int, Path]) -> None:
    port, log = receiver
    payload = {
        "status": "firing",
        "alerts": [{"labels": {"alertname": "PortalDown", "municipality": "hersonissos"}}],
        "commonAnnotations": {"summary": "line one\nline two"},
    }
    assert _post(port, json.dumps(payload).encode()) == 200
    assert _post(port, json.dumps({**payload, "status": "resolved"}).encode()) == 200
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["alerts"] == payload["alerts"] and first["status"] == "firing"
    assert first["received_at"] > 1_700_000_000
    assert json.loads(lines[1])["status"] == "resolved"


def test_alert_log_refuses_large_or_bad_bodies(receiver: tuple[int, Path]) -> None:
    port, log = receiver
    assert _post(port, b'{"x": "' + b"a" * 4096 + b'"}') == 413
    assert _post(port, b"not json") == 400
    assert _post(port, b"[1, 2]") == 400
    assert not log.exists()


_CHECK_PLAY = """\
- name: The monitoring role's target check
  hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - name: Check the targets
      ansible.builtin.include_role:
        name: monitoring
        tasks_from: target_check.yml
      vars:
        monitoring_check_targets: "{{ targets }}"
"""


@pytest.mark.parametrize(
    ("change", "ok"),
    [
        ({}, True),
        ({"domain": "evil.test\n1.2.3.4 bank.example.org"}, False),
        ({"slug": "hersonissos\n"}, False),
        ({"ip": "192.168.150.300"}, False),
        ({"modules": ["portal", "shell"]}, False),
    ],
    ids=["valid", "domain-newline", "slug-newline", "bad-ip", "unknown-module"],
)
def test_target_check_refuses_what_would_break_a_sink(
    tmp_path: Path, change: dict[str, Any], ok: bool
) -> None:
    """Run by Ansible itself (asserts only, on localhost): a target's fields go into file names,
    YAML and /etc/hosts on control, so anything but the expected shapes is refused."""
    (tmp_path / "play.yml").write_text(_CHECK_PLAY)
    (tmp_path / "vars.json").write_text(json.dumps({"targets": [TARGETS[0] | change]}))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "play.yml"]
        + ["-e", "@vars.json"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_ROLES_PATH": str(ROLES), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    if not ok:
        assert "monitoring: target" in proc.stdout


def test_alert_history_rotation_parses(tmp_path: Path) -> None:
    log = tmp_path / "alerts.jsonl"
    log.write_text('{"status": "firing"}\n')
    conf = tmp_path / "kallikratis-alerts"
    conf.write_text(
        render(
            "monitoring",
            "etc/logrotate.d/kallikratis-alerts.j2",
            CONTROL_VARS,
            monitoring_alert_log_file=str(log),
        )
    )
    conf.chmod(0o644)
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    proc = _run([logrotate, "--debug", "--state", str(tmp_path / "state"), str(conf)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"considering log {log}" in proc.stdout + proc.stderr
    assert "error" not in (proc.stdout + proc.stderr).lower()

"""roles/base: sshd, firewall, time, journald, agents, unattended upgrades."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

BASE_SERVICES = (
    "ssh",
    "nftables",
    "systemd-timesyncd",
    "qemu-guest-agent",
    "prometheus-node-exporter",
)


def test_admin_user_has_sudo(host: Any) -> None:
    user = host.user("kallikratis")
    assert user.exists
    assert "sudo" in user.groups or host.run("sudo -n -l -U kallikratis").rc == 0


def test_base_services_running(host: Any) -> None:
    bad = [
        s for s in BASE_SERVICES if not (host.service(s).is_running and host.service(s).is_enabled)
    ]
    assert not bad, f"not running or not enabled: {bad}"


def test_watched_services_running(host: Any, spec: dict[str, Any]) -> None:
    # The inventory's watch_services: units a municipality needs beyond the stack's own.
    bad = [s for s in spec.get("watch_services", []) if not host.service(s).is_running]
    assert not bad, f"watched services not running: {bad}"


def test_sshd_no_root_no_passwords(host: Any) -> None:
    with host.sudo():
        out = host.check_output("sshd -T")
    effective = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["pubkeyauthentication"] == "yes"


def _input_chain(host: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    with host.sudo():
        ruleset = json.loads(host.check_output("nft -j list ruleset"))["nftables"]
    chains = [i["chain"] for i in ruleset if "chain" in i and i["chain"].get("hook") == "input"]
    assert len(chains) == 1, f"expected one input chain, found {chains}"
    chain = chains[0]
    rules = [
        i["rule"]
        for i in ruleset
        if "rule" in i
        and i["rule"]["chain"] == chain["name"]
        and i["rule"]["table"] == chain["table"]
    ]
    sets = {i["set"]["name"]: i["set"] for i in ruleset if "set" in i}
    return chain, rules, sets


def _dports(rule: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for e in rule["expr"]:
        m = e.get("match", {})
        if m.get("left", {}).get("payload", {}).get("field") == "dport":
            right = m["right"]
            if isinstance(right, int):
                ports.add(right)
            elif isinstance(right, dict) and "set" in right:
                ports |= {p for p in right["set"] if isinstance(p, int)}
    return ports


def _saddr(rule: dict[str, Any]) -> Any:
    for e in rule["expr"]:
        m = e.get("match", {})
        if m.get("left", {}).get("payload", {}).get("field") == "saddr":
            return m["right"]
    return None


def _accepts(rule: dict[str, Any]) -> bool:
    return any("accept" in e for e in rule["expr"])


def _networks(value: Any, sets: dict[str, Any]) -> list[ipaddress.IPv4Network]:
    if isinstance(value, str) and value.startswith("@"):
        value = sets[value[1:]].get("elem", [])
    if isinstance(value, dict) and "set" in value:  # an anonymous set: saddr { a, b }
        value = value["set"]
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict) and "prefix" in item:
            out.append(ipaddress.ip_network(f"{item['prefix']['addr']}/{item['prefix']['len']}"))
        elif isinstance(item, dict) and "range" in item:
            lo, hi = item["range"]
            out += list(
                ipaddress.summarize_address_range(
                    ipaddress.ip_address(lo), ipaddress.ip_address(hi)
                )
            )
        elif isinstance(item, str):
            out.append(ipaddress.ip_network(item))
    return out


def test_firewall_default_deny_inbound(host: Any) -> None:
    chain, _, _ = _input_chain(host)
    assert chain.get("policy") == "drop"


def mgmt_sources_accepted(
    rules: list[dict[str, Any]], sets: dict[str, Any], port: int
) -> list[ipaddress.IPv4Network] | None:
    """The sources the input chain accepts *port* from; None when it accepts it from anyone."""
    nets: list[ipaddress.IPv4Network] = []
    for rule in (r for r in rules if _accepts(r) and port in _dports(r)):
        source = _saddr(rule)
        if source is None:
            return None
        nets += _networks(source, sets)
    return sorted(set(ipaddress.collapse_addresses(nets)))


def test_firewall_mgmt_ports_only_from_mgmt_sources(host: Any, spec: dict[str, Any]) -> None:
    # Exactly the management sources (the controller): not a wider network, not a neighbour.
    # On control, SSH also from each municipality (the backup store, user borg only).
    _, rules, sets = _input_chain(host)
    for port in (22, 9100):
        extra = spec.get("backup_clients", []) if port == 22 else []
        wanted = sorted(
            ipaddress.collapse_addresses(
                ipaddress.ip_network(n) for n in [*spec["mgmt_sources"], *extra]
            )
        )
        accepted = mgmt_sources_accepted(rules, sets, port)
        assert accepted is not None, f"port {port} is open to everyone"
        assert accepted == wanted, (
            f"port {port} is accepted from {[str(n) for n in accepted]}, "
            f"the management sources are {[str(n) for n in wanted]}"
        )


def test_firewall_web_ports_open(host: Any) -> None:
    _, rules, _ = _input_chain(host)
    for port in (80, 443):
        assert any(_accepts(r) and port in _dports(r) and _saddr(r) is None for r in rules), (
            f"port {port} is not open to everyone"
        )


def test_unlisted_port_is_dropped(web: Any) -> None:
    # Nothing listens on 8081: a default-deny firewall drops (timeout) instead of RST.
    assert web.tcp_state(8081) == "filtered"


def test_ports_listening(host: Any) -> None:
    for spec in ("tcp://0.0.0.0:22", "tcp://80", "tcp://443", "tcp://9100"):
        assert host.socket(spec).is_listening, f"{spec} is not listening"


def test_node_exporter_reachable_from_mgmt(web: Any) -> None:
    # The controller is in the management network.
    assert web.tcp_state(9100) == "open"
    assert web.tcp_state(22) == "open"


def test_time_sync(host: Any) -> None:
    out = host.check_output("timedatectl show -p NTP --value")
    assert out.strip() == "yes"
    assert host.file("/etc/systemd/timesyncd.conf.d/10-kallikratis.conf").exists


def test_journald_limits(host: Any) -> None:
    conf = host.file("/etc/systemd/journald.conf.d/10-kallikratis.conf")
    assert conf.exists
    assert conf.contains("^SystemMaxUse=")
    assert conf.contains("^MaxRetentionSec=")


def test_unattended_upgrades_as_the_inventory_says(host: Any, spec: dict[str, Any]) -> None:
    # Default base_unattended_upgrades: false (patch runs do the updates).
    out = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    if spec["unattended_upgrades"]:
        assert '"1"' in out, out
        return
    assert '"0"' in out, out
    # testinfra's is_enabled falls back to SysV rc links for units with an init script.
    for unit in ("unattended-upgrades.service", "apt-daily-upgrade.timer"):
        state = host.run("systemctl is-enabled %s", unit).stdout.strip()
        assert state in ("disabled", "masked"), f"{unit} is {state}"
        assert not host.service(unit).is_running


def test_greek_locale_available(host: Any) -> None:
    assert "el_GR.utf8" in host.check_output("locale -a").split()

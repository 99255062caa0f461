"""Tenants isolated from each other, on the real shared fleet (``fresh``: reverted to the base
snapshot before and after the module).

Municipality A (archanes-asterousia) plays the hostile tenant with root on its own VM; B
(hersonissos) is its neighbour. The controller is this test process, inside the lab namespace,
listening on the fleet network's gateway address: what arrives there is what got through.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import GATEWAY, SLUGS, Deployed, Fleet

A, B = SLUGS
FREE = "10.77.0.199"  # in the fleet network, nobody's address


@dataclass
class Tenants:
    fleet: Fleet
    ip: dict[str, str]
    mac: dict[str, str]
    iface: str  # A's interface name on the fleet network


@pytest.fixture(scope="module")
def tenants(fresh: Deployed) -> Tenants:
    fleet = fresh.fleet
    rows = {r["slug"]: r for r in fleet.kk_json("status")["municipalities"]}
    ip = {s: rows[s]["ip"] for s in SLUGS}
    assert FREE not in ip.values()
    iface = {
        s: fleet.ssh(s, f"ip -o route get {GATEWAY}").split(" dev ")[1].split()[0] for s in SLUGS
    }
    mac = {s: fleet.ssh(s, f"cat /sys/class/net/{iface[s]}/address").strip().lower() for s in SLUGS}
    return Tenants(fleet, ip, mac, iface[A])


def _answers_from(fleet: Fleet, slug: str, ip: str, port: int) -> bool:
    """Does a TCP connection from *slug*'s VM to ip:port open (4 s bound)?"""
    out = fleet.ssh(
        slug, f"timeout 4 bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null && echo open || echo shut"
    )
    return out.strip().splitlines()[-1] == "open"


def _answers_from_controller(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=4).close()
        return True
    except OSError:
        return False


@contextmanager
def _tcp_listener() -> Iterator[int]:
    """A TCP port on the gateway that accepts (the proof that A's network works at all)."""
    srv = socket.create_server((GATEWAY, 0))
    srv.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with suppress(OSError):
                srv.accept()[0].close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        srv.close()


@contextmanager
def _udp_listener() -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """A UDP port on the gateway; yields (port, [(source address, payload), ...])."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((GATEWAY, 0))
    sock.settimeout(0.5)
    got: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except OSError:
                continue
            got.append((addr[0], data))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1], got
    finally:
        stop.set()
        t.join(5)
        sock.close()


def test_the_neighbours_management_ports_do_not_answer(tenants: Tenants) -> None:
    fleet, ip = tenants.fleet, tenants.ip
    with _tcp_listener() as port:
        # A's network works: the controller answers it
        assert _answers_from(fleet, A, GATEWAY, port)
    for port in (22, 9100):
        assert not _answers_from(fleet, A, ip[B], port), f"{B}:{port} answers {A}"
        assert not _answers_from(fleet, B, ip[A], port), f"{A}:{port} answers {B}"
    # the isolated port cuts every frame between tenants: the web too (citizens reach a
    # portal through the public path, never from the neighbour's VM)
    assert not _answers_from(fleet, A, ip[B], 443)


def test_the_controller_still_reaches_everything(tenants: Tenants) -> None:
    for slug in SLUGS:
        for port in (22, 80, 443, 9100):
            assert _answers_from_controller(tenants.ip[slug], port), f"{slug}:{port}"


SEND_FROM = """
import socket, sys, time
gateway, port = sys.argv[1], int(sys.argv[2])
for _ in range(3):
    for src in sys.argv[3:]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.sendto(src.encode(), (gateway, port))
        s.close()
    time.sleep(0.3)
"""


def test_a_spoofed_source_address_gets_nothing_through(tenants: Tenants) -> None:
    fleet, ip, iface = tenants.fleet, tenants.ip, tenants.iface
    add = f"sudo ip addr add {{}}/32 dev {iface}"
    fleet.ssh(A, f"{add.format(ip[B])} && {add.format(FREE)}")
    try:
        with _udp_listener() as (port, got):
            fleet.ssh(
                A,
                f"sudo python3 -c '{SEND_FROM}' {GATEWAY} {port} {ip[A]} {ip[B]} {FREE}",
            )
            time.sleep(1)
    finally:
        fleet.ssh(
            A,
            f"sudo ip addr del {ip[B]}/32 dev {iface}; sudo ip addr del {FREE}/32 dev {iface}",
            check=False,
        )
    sources = {src for src, _ in got}
    assert ip[A] in sources, f"not even A's own datagrams arrived: {got}"  # the control
    assert sources == {ip[A]}, f"spoofed sources got through: {sorted(sources - {ip[A]})}"


SEND_RAW = """
import socket, struct, sys
iface, src_mac, src_ip, dst_mac, dst_ip, port, kind = sys.argv[1:8]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
if kind == "arp":
    # an unsolicited ARP reply: "src_ip is at src_mac"
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac(src_mac),
                       socket.inet_aton(src_ip), mac(dst_mac), socket.inet_aton(dst_ip))
    frame = mac(dst_mac) + mac(src_mac) + b"\\x08\\x06" + body
else:
    payload = kind.encode()
    udp = struct.pack("!HHHH", 40000, int(port), 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    csum = sum(struct.unpack("!10H", hdr))
    csum = (csum & 0xFFFF) + (csum >> 16)
    csum = ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF
    hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
    frame = mac(dst_mac) + mac(src_mac) + b"\\x08\\x00" + hdr + udp
for _ in range(3):
    s.send(frame)
"""


def _gateway_mac(tenants: Tenants) -> str:
    fleet = tenants.fleet
    fleet.ssh(A, f"ping -c1 -W2 {GATEWAY} >/dev/null; true")
    out = fleet.ssh(A, f"ip neigh show {GATEWAY} dev {tenants.iface}")
    return out.split(" lladdr ")[1].split()[0]


def _send_raw(tenants: Tenants, *args: str) -> None:
    tenants.fleet.ssh(A, f"sudo python3 -c '{SEND_RAW}' {tenants.iface} {' '.join(args)}")


def test_a_spoofed_mac_address_gets_nothing_through(tenants: Tenants) -> None:
    ip, mac = tenants.ip, tenants.mac
    gw_mac = _gateway_mac(tenants)
    forged = "52:54:00:de:ad:01"
    with _udp_listener() as (port, got):
        _send_raw(tenants, mac[A], ip[A], gw_mac, GATEWAY, str(port), "own-mac")  # the control
        _send_raw(tenants, forged, ip[A], gw_mac, GATEWAY, str(port), "forged-mac")
        _send_raw(tenants, mac[B], ip[A], gw_mac, GATEWAY, str(port), "neighbours-mac")
        time.sleep(1)
    payloads = {data.decode() for _, data in got}
    assert "own-mac" in payloads, f"the control frame did not arrive: {got}"
    assert payloads == {"own-mac"}, f"frames with a forged source MAC arrived: {payloads}"


def _controller_neighbour(ip: str) -> str:
    out = subprocess.run(
        ["ip", "neigh", "show", ip], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return out.split(" lladdr ")[1].split()[0].lower() if " lladdr " in out else ""


def test_arp_replies_claiming_the_neighbours_address_do_not_poison_the_controller(
    tenants: Tenants,
) -> None:
    ip, mac = tenants.ip, tenants.mac
    assert _answers_from_controller(ip[B], 22)  # the controller knows B's MAC now
    assert _controller_neighbour(ip[B]) == mac[B]
    time.sleep(1.5)  # past the neighbour table's lock time: a new answer would be taken
    gw_mac = _gateway_mac(tenants)
    _send_raw(tenants, mac[A], ip[B], gw_mac, GATEWAY, "0", "arp")
    time.sleep(1)
    assert _controller_neighbour(ip[B]) == mac[B], f"{A} took over {B}'s address"
    assert _answers_from_controller(ip[B], 22)


def test_verify_fails_when_a_neighbour_is_let_in(tenants: Tenants) -> None:
    fleet, ip = tenants.fleet, tenants.ip
    assert ipaddress.ip_address(ip[B]) in ipaddress.ip_network("10.77.0.0/24")
    fleet.ssh(A, f"sudo nft insert rule inet filter input ip saddr {ip[B]} tcp dport 22 accept")
    try:
        out = fleet.kk_json("verify", A, check=False)
    finally:
        fleet.ssh(A, "sudo nft -f /etc/nftables.conf")
    failed = [c for c in out["checks"] if not c["passed"]]
    names = " ".join(str(c) for c in failed)
    assert failed and "test_firewall_mgmt_ports_only_from_mgmt_sources" in names, failed
    assert all(c["slug"] == A for c in failed)

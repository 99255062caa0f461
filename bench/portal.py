"""Portal benchmark: anonymous requests per second and p95 latency of the home page on one VM,
with nginx's page cache bypassed and used, side by side; time to first byte of a consultation.

Load: ApacheBench (`ab`, Debian's apache2-utils), concurrency 20, keep-alive, 25 s per column
(50 s of load in all, bounded by ab's own time limit), after a short warm-up. "Cache off" sends
the cookie wordpress_no_cache=1, which the portal's nginx configuration bypasses the cache for
(every request then runs WordPress in PHP-FPM, as with the cache disabled); "cache on" sends no
cookie, as an anonymous citizen does. One VM (1 vCPU, TCG here), inside the lab namespace:

    bench/portal                       # a throw-away fleet of one (hersonissos): up, deploy
    bench/portal --ip 10.42.0.23 --domain hersonissos.crete.kallikratis.test --ca CA.crt
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import BenchFleet, row  # noqa: E402

CONCURRENCY = 20
SECONDS = 25
CONSULTATION = "/diavoulefseis/kanonismos-kathariotitas/"
NO_CACHE = "wordpress_no_cache=1"


def ab(ip: str, domain: str, path: str, cookie: str = "") -> tuple[float, float, int]:
    """(requests/s, p95 ms, failed requests) of one bounded ab run."""
    argv = [
        "ab",
        "-q",
        "-k",
        "-c",
        str(CONCURRENCY),
        "-t",
        str(SECONDS),
        "-n",
        "1000000",
        "-s",
        "30",
        "-H",
        f"Host: {domain}",
        "-H",
        "Accept-Encoding: gzip",
    ]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    done = subprocess.run(
        [*argv, f"https://{ip}{path}"],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        check=False,
    )
    return parse_ab(done.stdout + done.stderr)


def parse_ab(out: str) -> tuple[float, float, int]:
    rps = re.search(r"^Requests per second:\s+([\d.]+)", out, re.M)
    p95 = re.search(r"^\s+95%\s+(\d+)", out, re.M)
    failed = re.search(r"^Failed requests:\s+(\d+)", out, re.M)
    non2xx = re.search(r"^Non-2xx responses:\s+(\d+)", out, re.M)
    if not (rps and p95 and failed):
        raise SystemExit(f"ab gave no figures:\n{out[-2000:]}")
    bad = int(failed[1]) + (int(non2xx[1]) if non2xx else 0)
    return float(rps[1]), float(p95[1]), bad


def ttfb(ip: str, domain: str, ca: Path, path: str, cookie: str, times: int = 5) -> float:
    """Median time to first byte (ms): TLS connect done, request sent, until the status line."""
    ctx = ssl.create_default_context(cafile=str(ca))
    samples = []
    for _ in range(times):
        request = f"GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n"
        if cookie:
            request += f"Cookie: {cookie}\r\n"
        with (
            socket.create_connection((ip, 443), timeout=30) as raw,
            ctx.wrap_socket(raw, server_hostname=domain) as tls,
        ):
            start = time.monotonic()
            tls.sendall((request + "\r\n").encode())
            tls.recv(1)
            samples.append((time.monotonic() - start) * 1000)
    return statistics.median(samples)


def measure(ip: str, domain: str, ca: Path) -> None:
    for _ in range(3):  # warm-up: PHP's opcache, and the page into the cache
        ttfb(ip, domain, ca, "/", "", times=1)
    off = ab(ip, domain, "/", NO_CACHE)
    on = ab(ip, domain, "/", "")
    print()
    row(f"home page, concurrency {CONCURRENCY}, {SECONDS} s each", "cache off", "cache on")
    row("requests per second", f"{off[0]:.1f}", f"{on[0]:.1f}")
    row("p95 latency (ms)", f"{off[1]:.0f}", f"{on[1]:.0f}")
    row("failed or non-2xx requests", off[2], on[2])
    row(
        "consultation page, time to first byte (ms)",
        f"{ttfb(ip, domain, ca, CONSULTATION, NO_CACHE):.0f}",
        f"{ttfb(ip, domain, ca, CONSULTATION, ''):.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", help="an existing portal VM (else a throw-away fleet of one)")
    parser.add_argument("--domain", help="its domain (with --ip)")
    parser.add_argument("--ca", type=Path, help="the fleet CA that signed its certificate")
    args = parser.parse_args()
    if not shutil.which("ab"):
        raise SystemExit(
            "ab is missing: apt-get install apache2-utils (scripts/system-packages.txt)"
        )
    print("kallikratis bench/portal (TCG, this machine)", flush=True)
    if args.ip:
        if not (args.domain and args.ca):
            raise SystemExit("--ip needs --domain and --ca")
        measure(args.ip, args.domain, args.ca)
        return
    bf = BenchFleet("pbench", 86, ["hersonissos"])
    try:
        bf.kk("up", "--all")
        bf.kk("deploy", "--all")
        ca = bf.state / "fleets" / "pbench" / "pki" / "ca.crt"
        done = subprocess.run(
            [sys.executable, "-m", "kallikratis.cli", "-i", str(bf.inventory), "status", "--json"],
            env=bf.env,
            capture_output=True,
            text=True,
            check=True,
        )
        [vm] = json.loads(done.stdout)["municipalities"]
        measure(vm["ip"], vm["domain"], ca)
    finally:
        bf.cleanup()


if __name__ == "__main__":
    main()

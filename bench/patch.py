"""Patch benchmark (prints figures; not a test): snapshot and revert, one vs three.

A throw-away fleet of three municipalities (portal + opendata) is brought up and deployed,
pointed at the signed test repository (tests/helpers/aptrepo.py) with kallikratis-probe 1.0
installed; each VM then gets a base snapshot (`bench-base`, not ours: patch runs never prune
it) so every measurement starts from the same state. Then, side by side in one run:

  baseline  the same update done by hand, no safety net: `apt-get dist-upgrade`, the stack
            deploy and the reboot 1.1 asks for, on one VM
  one       `kallikratis patch NAME` on the same VM from the same state
  three     `kallikratis patch --all --canary 0` on all three from the same state
  libvirt   internal snapshot with memory / revert / delete of one running VM (median of 3)

Targets (issue #4, TCG): snapshot and revert take seconds; three <= 1.7 x one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from benchlib import BenchFleet, row  # noqa: E402
from kallikratis.hypervisor import LibvirtBackend  # noqa: E402

from tests.helpers.aptrepo import AptRepo  # noqa: E402

SLUGS = ["archanes-asterousia", "minoa-pediada", "hersonissos"]
ONE = "minoa-pediada"
BASE = "bench-base"


def run(bf: BenchFleet, *args: str, check: bool = True) -> tuple[float, str]:
    argv = [sys.executable, "-m", "kallikratis.cli", "-i", str(bf.inventory), *args]
    start = time.monotonic()
    done = subprocess.run(argv, env=bf.env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if check and done.returncode != 0:
        raise SystemExit(f"kallikratis {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return took, done.stdout


def ssh(bf: BenchFleet, slug: str, command: str) -> str:
    return run(bf, "ssh", slug, "--", command)[1]


def set_vars(bf: BenchFleet, **values: object) -> None:
    path = bf.inventory / "group_vars" / "all" / "fleet.yml"
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def revert_all(conn: libvirt.virConnect, bf: BenchFleet) -> None:
    for slug in SLUGS:
        dom = conn.lookupByName(f"{bf.name}-{slug}")
        dom.revertToSnapshot(
            dom.snapshotLookupByName(BASE, 0), libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
        )
        if not LibvirtBackend("qemu:///system", conn).sync_guest_clock(dom.name()):
            ssh(bf, slug, f"sudo date -u -s @{int(time.time())}")
        for snap in dom.listAllSnapshots():
            if snap.getName() != BASE:
                snap.delete(0)


def libvirt_figures(conn: libvirt.virConnect, domain: str) -> tuple[float, float, float]:
    dom = conn.lookupByName(domain)
    took: dict[str, list[float]] = {"snapshot": [], "revert": [], "delete": []}
    for i in range(3):
        xml = f"<domainsnapshot><name>bench-{i}</name></domainsnapshot>"
        t = time.monotonic()
        snap = dom.snapshotCreateXML(xml, 0)
        took["snapshot"].append(time.monotonic() - t)
        t = time.monotonic()
        dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING)
        took["revert"].append(time.monotonic() - t)
        t = time.monotonic()
        snap.delete(0)
        took["delete"].append(time.monotonic() - t)
    return (
        statistics.median(took["snapshot"]),
        statistics.median(took["revert"]),
        statistics.median(took["delete"]),
    )


def baseline(bf: BenchFleet) -> float:
    """By hand: upgrade, deploy, reboot, no maintenance mode, snapshot or verify."""
    start = time.monotonic()
    ssh(bf, ONE, "sudo DEBIAN_FRONTEND=noninteractive apt-get update -q")
    ssh(
        bf, ONE, "sudo DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a apt-get dist-upgrade -y -q"
    )
    run(bf, "deploy", ONE)
    ssh(bf, ONE, "sudo systemctl reboot || true")
    time.sleep(5)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        argv = [sys.executable, "-m", "kallikratis.cli", "-i", str(bf.inventory)]
        done = subprocess.run(
            [*argv, "ssh", ONE, "--", "cat /usr/share/kallikratis-probe/VERSION"],
            env=bf.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == "1.1":
            break
        time.sleep(2)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway-octet", type=int, default=79)
    args = parser.parse_args()
    bf = BenchFleet("bpatch", args.gateway_octet)
    conn = libvirt.open("qemu:///system")
    try:
        setup = time.monotonic()
        bf.kk("up", "--all")
        repo = AptRepo(bf.dir / "aptrepo")
        repo.build()
        repo.publish(["1.0"])
        with repo.serve(f"10.{args.gateway_octet}.0.1", 0) as url:
            set_vars(bf, apt_sources=[repo.source_entry(url)], watch_services=[])
            bf.kk("deploy", "--all")
            for slug in SLUGS:
                ssh(
                    bf,
                    slug,
                    "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q kallikratis-probe",
                )
            set_vars(bf, watch_services=["kallikratis-probe.service"])
            repo.publish(["1.0", "1.1"])
            for slug in SLUGS:
                conn.lookupByName(f"{bf.name}-{slug}").snapshotCreateXML(
                    f"<domainsnapshot><name>{BASE}</name></domainsnapshot>", 0
                )
            print(
                f"set-up (up, deploy, probe 1.0, base snapshots): {time.monotonic() - setup:.0f} s"
            )
            snap, revert, delete = libvirt_figures(conn, f"{bf.name}-{ONE}")
            revert_all(conn, bf)
            by_hand = baseline(bf)
            revert_all(conn, bf)
            one, out_one = run(bf, "patch", ONE, "--canary", "0", "--json")
            revert_all(conn, bf)
            three, out_three = run(bf, "patch", "--all", "--canary", "0", "--json")
        print("\npatch benchmark (TCG, 2 cores; kallikratis-probe 1.0 → 1.1 with a reboot)")
        row("", "measured", "target")
        row("internal snapshot with memory, running VM", f"{snap:.2f} s", "seconds")
        row("revert to it (VM left running)", f"{revert:.2f} s", "seconds")
        row("delete it", f"{delete:.2f} s", "")
        row("baseline: by hand, no safety net, one VM", f"{by_hand:.0f} s", "")
        row("kallikratis patch, one VM", f"{one:.0f} s", "")
        row("  overhead vs by hand", f"{one / by_hand:.2f} x", "")
        row("kallikratis patch, three VMs in one wave", f"{three:.0f} s", "")
        row("  three / one", f"{three / one:.2f} x", "<= 1.7 x")
        for label, out in (("one", out_one), ("three", out_three)):
            for m in json.loads(out)["municipalities"]:
                t = ", ".join(f"{k} {v:.1f} s" for k, v in m["timings"].items())
                print(f"  {label}: {m['slug']}: {m['result']}, {m['seconds']:.0f} s ({t})")
    finally:
        conn.close()
        bf.cleanup()


if __name__ == "__main__":
    main()

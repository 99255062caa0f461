"""Deploy benchmark: the same playbook with our Ansible settings (mitogen, pipelining,
ControlPersist) and with stock settings, in the same run.

Figures: first deploy of one municipality without `education`; the extra time `education`
costs; a no-op re-deploy; three municipalities in parallel vs one.
Targets (issue #3, TCG): first deploy <= 6 min per VM without education; no-op <= 90 s per VM;
three in parallel <= 1.7 x one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import BenchFleet, row  # noqa: E402


def deploy(bf: BenchFleet, *, stock: bool, names: list[str] | None = None) -> tuple[float, dict]:
    env = dict(bf.env)
    if stock:
        env |= {
            "KALLIKRATIS_ANSIBLE_STOCK": "1",
            "ANSIBLE_PIPELINING": "False",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
        }
    argv = [
        sys.executable,
        "-m",
        "kallikratis.cli",
        "-i",
        str(bf.inventory),
        "deploy",
        *(names or ["--all"]),
        "--json",
    ]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if done.returncode != 0:  # report it next to the other column instead of losing both
        print(f"deploy failed after {took:.0f} s:\n{done.stdout[-2000:]}", flush=True)
        return float("nan"), {}
    hosts = json.loads(done.stdout)["hosts"]
    return took, {h: v["changed"] for h, v in hosts.items()}


def one_vm(name: str, octet: int, slug: str, *, stock: bool) -> tuple[float, float, int]:
    bf = BenchFleet(name, octet, [slug])
    try:
        bf.kk("up", "--all")
        first, _ = deploy(bf, stock=stock)
        again, changed = deploy(bf, stock=stock)
        return first, again, sum(changed.values())
    finally:
        bf.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-stock", action="store_true", help="only our settings")
    parser.add_argument(
        "--only-one",
        action="store_true",
        help="only the one-municipality comparison (ours vs stock)",
    )
    args = parser.parse_args()
    os.environ.pop("KALLIKRATIS_ANSIBLE_STOCK", None)
    print("kallikratis bench/deploy (TCG, this machine)", flush=True)
    ours = one_vm("dmit", 83, "minoa-pediada", stock=False)
    stock = None if args.skip_stock else one_vm("dstock", 84, "minoa-pediada", stock=True)
    print("\none municipality, portal + opendata           ours (s)    stock (s)")
    row("first deploy", f"{ours[0]:.0f}", f"{stock[0]:.0f}" if stock else "-")
    row("no-op re-deploy", f"{ours[1]:.0f}", f"{stock[1]:.0f}" if stock else "-")
    row("changed on re-deploy", ours[2], stock[2] if stock else "-")
    if args.only_one:
        return
    edu = one_vm("dedu", 85, "hersonissos", stock=False)
    bf = BenchFleet("dthree", 86, None)
    try:
        bf.kk("up", "--all")
        three, _ = deploy(bf, stock=False)
    finally:
        bf.cleanup()
    print("\neducation (Kolibri)                              seconds")
    row("first deploy with education", f"{edu[0]:.0f}")
    row("extra time for education", f"{edu[0] - ours[0]:.0f}")
    print("\nparallel                                         seconds      ratio")
    row("three municipalities, first deploy", f"{three:.0f}", f"{three / edu[0]:.2f} x one")


if __name__ == "__main__":
    main()

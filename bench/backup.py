"""Backup benchmark (prints figures; not a test): first and incremental backups of one
municipality and of three in parallel, and a restore, on a running lab fleet with control.

Run inside the lab once `scripts/lab up` has deployed the fleet (control included):

    scripts/lab run -- .venv/bin/python bench/backup.py [--inventory inventories/crete] [--fresh]
        [--restore-test]

Side by side, in one run:
  one     `kallikratis backup NAME`, then once more (incremental): wall time, the archive's
          original size and what it added to the repository (deduplicated size)
  three   `kallikratis backup --all --parallel 3`, then once more: wall time (and its ratio to
          one; issue #11 asks <= 1.7x), sizes summed
  restore `kallikratis restore NAME --yes` of the newest archive (maintenance, snapshot,
          extract, databases, verify)
  restore-test (with --restore-test) `kallikratis restore-test NAME`: the newest archive
          into a throwaway VM on the isolated network, verify, content check, removal; the
          wall time and each phase's

"First" is a real first backup only into an empty repository. With --fresh (a lab fleet
only) the municipalities' repositories on control are moved aside first and put back at the
end, the bench's own repositories removed; without it, a repository that already has
archives makes the "first" row an incremental one, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import row  # noqa: E402

STORE = "/srv/backups"  # kallikratis.stackvars.BACKUP_STORE_DIR
ASIDE = ".bench-aside"


class Lab:
    def __init__(self, inventory: str) -> None:
        self.inventory = inventory

    def kk(self, *args: str, timeout: float = 4 * 3600) -> tuple[float, str]:
        """Run kallikratis; (wall seconds, stdout). Raises SystemExit on failure."""
        argv = [str(ROOT / ".venv" / "bin" / "kallikratis"), "-i", self.inventory, *args]
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        took = time.monotonic() - start
        if done.returncode != 0:
            raise SystemExit(f"kallikratis {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return took, done.stdout

    def json(self, *args: str) -> tuple[float, Any]:
        took, out = self.kk(*args, "--json")
        return took, json.loads(out[out.index("{") :])

    def on(self, slug: str, command: str) -> str:
        return self.kk("ssh", slug, "--", command, timeout=600)[1]

    def archives(self, slug: str) -> int:
        return len(self.json("backups", slug)[1]["archives"])


def backup(lab: Lab, names: list[str], parallel: int) -> tuple[float, int, int, list[str]]:
    """(seconds, original bytes, deduplicated bytes, failed slugs) of one `backup` run."""
    args = ["backup", *names, "--parallel", str(parallel)]
    argv = [str(ROOT / ".venv" / "bin" / "kallikratis"), "-i", lab.inventory, *args, "--json"]
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=4 * 3600, check=False)
    took = time.monotonic() - start
    try:
        rows = json.loads(done.stdout[done.stdout.index("{") :])["municipalities"]
    except ValueError:
        raise SystemExit(f"backup failed:\n{done.stdout}\n{done.stderr}") from None
    size = sum((r["archive"] or {}).get("original_size", 0) for r in rows)
    dedup = sum((r["archive"] or {}).get("deduplicated_size", 0) for r in rows)
    return took, size, dedup, [r["slug"] for r in rows if r["result"] != "ok"]


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def aside(lab: Lab, control: str, slugs: list[str]) -> None:
    """Move repositories out of the way (once: the first aside copy is the original)."""
    for slug in slugs:
        repo = f"{STORE}/{slug}"
        lab.on(
            control,
            f"sudo sh -c 'if [ -e {repo}{ASIDE} ]; then rm -rf {repo}; "
            f"elif [ -e {repo} ]; then mv {repo} {repo}{ASIDE}; fi'",
        )


def put_back(lab: Lab, control: str, slugs: list[str]) -> None:
    for slug in slugs:
        repo = f"{STORE}/{slug}"
        lab.on(
            control,
            f"sudo sh -c 'if [ -e {repo}{ASIDE} ]; then rm -rf {repo} && "
            f"mv {repo}{ASIDE} {repo}; fi'",
        )


def measure(
    lab: Lab, one: str, slugs: list[str], control: str, fresh: bool, restore_test: bool
) -> None:
    def first_label(what: str, names: list[str]) -> str:
        had = sum(lab.archives(s) for s in names)
        return f"{what} first" if had == 0 else f"{what} 'first' ({had} archives already)"

    if fresh:
        aside(lab, control, slugs)
    print("backup (wall s, original MiB, deduplicated MiB):")
    label = first_label("one", [one])
    t1f, s1f, d1f, bad = backup(lab, [one], 1)
    row(label, f"{t1f:.0f} s", mib(s1f), mib(d1f), "FAILED " + ",".join(bad) if bad else "")
    t1i, s1i, d1i, bad = backup(lab, [one], 1)
    row("one incremental", f"{t1i:.0f} s", mib(s1i), mib(d1i), "FAILED" if bad else "")
    if fresh:
        aside(lab, control, [one])  # the bench's own repository of ONE goes: all three empty
    label = first_label("three in parallel", slugs)
    t3f, s3f, d3f, bad = backup(lab, slugs, 3)
    row(label, f"{t3f:.0f} s", mib(s3f), mib(d3f), f"x{t3f / t1f:.2f} of one")
    t3i, s3i, d3i, bad = backup(lab, slugs, 3)
    row("three incremental", f"{t3i:.0f} s", mib(s3i), mib(d3i), f"x{t3i / t1i:.2f} of one")
    print("\nrestore:")
    took, result = lab.json("restore", one, "--yes")
    row(f"restore {one} (newest archive)", f"{took:.0f} s", result["result"], "")
    if not restore_test:
        print("restore-test: skipped (--restore-test: one throwaway VM, deployed and removed)")
        return
    print("\nrestore-test (wall s, result, phases):")
    took, result = lab.json("restore-test", one)
    [r] = result["results"]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in r["phases"].items())
    row(f"restore-test {one} (newest archive)", f"{took:.0f} s", r["result"], phases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "crete"))
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="lab only: move the repositories on control aside for a real first backup",
    )
    parser.add_argument(
        "--restore-test",
        action="store_true",
        help="also time `restore-test` of one municipality (a throwaway VM: up, deploy, removal)",
    )
    args = parser.parse_args()
    lab = Lab(args.inventory)
    status = lab.json("status")[1]["municipalities"]
    control = next((r["slug"] for r in status if "control" in (r.get("central_roles") or [])), "")
    tenants = [r["slug"] for r in status if not r.get("central_roles") and r["state"] == "running"]
    if not control or len(tenants) < 3:
        print("needs a running lab fleet, three municipalities and control: scripts/lab up")
        return 2
    slugs, one = tenants[:3], tenants[0]
    print(f"fleet {args.inventory}: {', '.join(slugs)}; one = {one}; store on {control}\n")
    try:
        measure(lab, one, slugs, control, args.fresh, args.restore_test)
    finally:
        if args.fresh:
            put_back(lab, control, slugs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

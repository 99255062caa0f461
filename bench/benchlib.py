"""Shared helpers for the benchmarks: a throw-away fleet and a timer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class BenchFleet:
    """A copy of inventories/crete under its own fleet name, network and state directory."""

    def __init__(
        self, name: str, cidr_octet: int, slugs: list[str] | None = None, central: bool = False
    ) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"kk-bench-{name}-"))
        self.inventory = self.dir / "inventory"
        shutil.copytree(
            ROOT / "inventories" / "crete",
            self.inventory,
            ignore=shutil.ignore_patterns("vault.yml"),
        )
        fleet_file = self.inventory / "group_vars" / "all" / "fleet.yml"
        data = yaml.safe_load(fleet_file.read_text())
        data["fleet_name"] = name
        data["fleet_network"].update(
            name=f"kallikratis-{name}",
            cidr=f"10.{cidr_octet}.0.0/24",
            gateway=f"10.{cidr_octet}.0.1",
            dns=[f"10.{cidr_octet}.0.1"],
            bridge=f"kk-{name}",
        )
        fleet_file.write_text(yaml.safe_dump(data, allow_unicode=True))
        hosts_file = self.inventory / "hosts.yml"
        hosts = yaml.safe_load(hosts_file.read_text())
        if not central:  # the municipalities' figures alone, unless the bench is about control
            hosts["all"]["children"].pop("central", None)
            hosts_file.write_text(yaml.safe_dump(hosts, allow_unicode=True))
        if slugs is not None:
            muni = hosts["all"]["children"]["municipalities"]["hosts"]
            for slug in list(muni):
                if slug not in slugs:
                    del muni[slug]
            hosts_file.write_text(yaml.safe_dump(hosts, allow_unicode=True))
        self.state = self.dir / "state"
        self.env = dict(
            os.environ,
            KALLIKRATIS_STATE_DIR=str(self.state),
            KALLIKRATIS_DOMAIN_TYPE="qemu",
            KALLIKRATIS_IMAGE_CACHE=os.environ.get(
                "KALLIKRATIS_IMAGE_CACHE", "/var/lib/kallikratis/images"
            ),
        )

    def kk(self, *args: str) -> float:
        """Run kallikratis; return wall-clock seconds. Raises on failure."""
        argv = [sys.executable, "-m", "kallikratis.cli", "-i", str(self.inventory), *args]
        start = time.monotonic()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        took = time.monotonic() - start
        if done.returncode != 0:
            raise SystemExit(f"kallikratis {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return took

    def cleanup(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "kallikratis.cli",
            "-i",
            str(self.inventory),
            "destroy",
            "--all",
            "--yes",
            "--no-final-backup",  # a benchmark's throwaway fleet
        ]
        subprocess.run(argv, env=self.env, capture_output=True, check=False)
        for verb in ("net-destroy", "net-undefine"):
            subprocess.run(
                ["virsh", "-q", verb, f"kallikratis-{self.name}"], capture_output=True, check=False
            )
        shutil.rmtree(self.dir, ignore_errors=True)


def row(label: str, *cols: object) -> None:
    print(f"  {label:<46}" + "".join(f" {c!s:>13}" for c in cols), flush=True)

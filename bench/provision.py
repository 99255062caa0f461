"""Provisioning benchmark: prints figures next to a baseline measured in the same run.

1. one VM: `kallikratis up` -> SSH-ready, vs. plain `virsh create` of the same image and seed
   plus waiting for the same SSH login (the baseline);
2. three VMs in parallel with `up --all`, vs. one;
3. disk used per VM after `up` (the copy-on-write overlay);
4. `plan` and `status` over a 332-municipality inventory against libvirt's test driver.
Targets (issue #2): one <= 1.1 x baseline and <= 75 s; three <= 1.7 x one; <= 100 MB per VM;
plan/status for 332 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, BenchFleet, row  # noqa: E402
from kallikratis import inventory, model, vmresources  # noqa: E402
from kallikratis.documents import VmKeys, compose  # noqa: E402
from kallikratis.provision import Engine  # noqa: E402
from kallikratis.ssh import wait_ready  # noqa: E402


def baseline_virsh_create() -> float:
    """Same image, same seed, same domain XML; started by `virsh create`, no Kallikratis."""
    bf = BenchFleet("bbase", 78, ["hersonissos"])
    try:
        fleet = inventory.load(bf.inventory)
        engine = Engine(
            fleet, state_dir=bf.state, image_cache=Path(bf.env["KALLIKRATIS_IMAGE_CACHE"])
        )
        m = fleet.municipalities[0]
        engine.keys.ensure_client_key()
        pair = engine.keys.host_key(m.slug)
        engine.write_known_hosts()
        image = engine.prepare(m.hypervisor, lambda *_: None)
        assert image is not None and pair is not None
        keys = VmKeys(pair, engine.keys.ensure_client_key())
        docs = compose(fleet, m, keys, image.version)
        be = engine.backend(m.hypervisor)
        vmresources.write_seed(be, fleet, m, docs.seed)
        vmresources.create_disk(be, fleet, m, image.path)
        xml = Path(bf.dir / "domain.xml")
        xml.write_text(docs.domain)
        start = time.monotonic()
        subprocess.run(["virsh", "-q", "create", str(xml)], check=True, capture_output=True)
        ready = wait_ready(engine.target(m), 600)
        took = time.monotonic() - start
        if ready is None:
            raise SystemExit("baseline VM never answered SSH")
        subprocess.run(["virsh", "-q", "destroy", m.vm_name], check=False, capture_output=True)
        return took
    finally:
        bf.cleanup()


def ours(name: str, octet: int, slugs: list[str]) -> tuple[float, list[int]]:
    bf = BenchFleet(name, octet, slugs)
    try:
        took = bf.kk("up", "--all")
        fleet = inventory.load(bf.inventory)
        engine = Engine(fleet, state_dir=bf.state)
        be = engine.backend("hv01")
        sizes = []
        for m in fleet.municipalities:
            vols = (be.volume(fleet.pool.name, v) for v in (m.disk_volume, m.seed_volume))
            sizes.append(sum(v.allocation_bytes for v in vols if v))
        return took, sizes
    finally:
        bf.cleanup()


def scale(n: int = 332) -> tuple[float, float, float, float]:
    """plan/status over n municipalities on libvirt's test driver, loaded from a node XML."""
    tmp = Path(tempfile.mkdtemp(prefix="kk-bench-scale-"))
    inv = tmp / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    node = tmp / "node.xml"
    hosts = {f"dimos-{i:03d}": {"display_name": f"Δήμος {i:03d}"} for i in range(1, n + 1)}
    (inv / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "hypervisors": {"hosts": {"hv01": {"libvirt_uri": f"test://{node}"}}},
                        "municipalities": {"hosts": hosts},
                    }
                }
            },
            allow_unicode=True,
        )
    )
    fleet_vars = yaml.safe_load((ROOT / "inventories/crete/group_vars/all/fleet.yml").read_text())
    fleet_vars["fleet_network"].update(cidr="10.80.0.0/22", gateway="10.80.0.1", dns=["10.80.0.1"])
    fleet_vars["vm_profiles"]["small"]["memory_mib"] = 64  # the test node is small
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(fleet_vars, allow_unicode=True))
    (inv / "group_vars" / "hypervisors.yml").write_text("domain_type: qemu\n")
    node.write_text("<node/>")
    fleet = inventory.load(inv)
    node.write_text(_node_xml(fleet))
    env_cmd = [sys.executable, "-m", "kallikratis.cli", "-i", str(inv)]
    times = []
    for cmd in (["plan", "--json"], ["status", "--json"]):
        start = time.monotonic()
        out = subprocess.run([*env_cmd, *cmd], capture_output=True, text=True, check=True)
        times.append(time.monotonic() - start)
        data = json.loads(out.stdout)
        count = len(data.get("items", data.get("municipalities", [])))
        assert count == n, count
    engine = Engine(fleet, state_dir=tmp / "state")
    start = time.monotonic()
    engine.plan(fleet.municipalities)
    t_plan = time.monotonic() - start
    start = time.monotonic()
    engine.status()
    t_status = time.monotonic() - start
    return times[0], times[1], t_plan, t_status


def _node_xml(fleet: model.Fleet) -> str:
    from xml.sax.saxutils import escape

    parts = ["<node>"]
    for m in fleet.municipalities:
        spec = model.vm_spec(fleet, m, "")
        parts.append(
            f"<domain type='test'><name>{m.vm_name}</name><memory unit='MiB'>64</memory>"
            f"<os><type>hvm</type></os><metadata><kk:municipality xmlns:kk='{model.METADATA_NS}'>"
            f"<kk:fleet>{fleet.name}</kk:fleet><kk:slug>{m.slug}</kk:slug>"
            f"<kk:display-name>{escape(m.display_name)}</kk:display-name>"
            f"<kk:image>bench</kk:image><kk:spec-hash>{model.spec_hash(spec)}</kk:spec-hash>"
            f"<kk:spec>{escape(json.dumps(spec, sort_keys=True))}</kk:spec>"
            f"</kk:municipality></metadata></domain>"
        )
    parts.append("</node>")
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "boot", "scale"], default="all")
    args = parser.parse_args()
    print("kallikratis bench/provision (TCG, this machine)", flush=True)
    if args.part in ("all", "scale"):
        cli_plan, cli_status, eng_plan, eng_status = scale()
        print("\n332 municipalities on libvirt's test driver      CLI wall (s)  engine (s)")
        row("plan", f"{cli_plan:.2f}", f"{eng_plan:.3f}")
        row("status", f"{cli_status:.2f}", f"{eng_status:.3f}")
    if args.part in ("all", "boot"):
        base = baseline_virsh_create()
        one, sizes1 = ours("bone", 79, ["hersonissos"])
        three, sizes3 = ours("bthree", 81, None)  # type: ignore[arg-type]
        print("\nstart -> SSH login with the pinned key            seconds       ratio")
        row("baseline: virsh create + wait for sshd", f"{base:.1f}", "1.00")
        row("kallikratis up, 1 municipality", f"{one:.1f}", f"{one / base:.2f} (<=1.1)")
        row(
            "kallikratis up --all, 3 in parallel",
            f"{three:.1f}",
            f"{three / one:.2f} x one (<=1.7)",
        )
        print("\ndisk per VM after up (overlay + seed)             MB")
        for size in sizes1 + sizes3:
            row("", f"{size / 1e6:.1f}")


if __name__ == "__main__":
    main()

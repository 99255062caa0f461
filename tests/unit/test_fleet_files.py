"""Fleet-wide files under concurrent runs: known_hosts entries are merged under a lock, and
verify's ssh_config, spec file and SSH control masters are per run."""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import pytest
from kallikratis import model, verify
from kallikratis.keys import KeyStore

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0Fc4cy7fOxDJ9vHsqPOhyGhX1ihPJWlHTcDW+P00Jz x"
ROUNDS = 60


def _writer(state_dir: str, prefix: str, octet: int) -> None:
    keys = KeyStore(Path(state_dir), "crete")
    for i in range(ROUNDS):
        keys.write_known_hosts({f"{prefix}-{i}": (f"10.{octet}.{i // 250}.{i % 250 + 1}", KEY)})


def _host_key_files(keys: KeyStore, prefixes: tuple[str, ...]) -> None:
    for prefix in prefixes:
        for i in range(ROUNDS):
            path = keys.paths.host_key(f"{prefix}-{i}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("stand-in for a vault-encrypted host key\n")


def test_two_processes_adding_entries_lose_none(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path, "crete")
    _host_key_files(keys, ("east", "west"))
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path), "east", 1)),
        ctx.Process(target=_writer, args=(str(tmp_path), "west", 2)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = keys.known_hosts.read_text().splitlines()
    slugs = sorted(line.split()[3] for line in lines)
    assert len(lines) == 2 * ROUNDS
    assert slugs == sorted(f"{p}-{i}" for p in ("east", "west") for i in range(ROUNDS))


def test_merge_drops_destroyed_municipalities_and_reclaimed_addresses(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path, "crete")
    _host_key_files(keys, ("a",))
    keys.write_known_hosts({"a-0": ("10.0.0.5", KEY), "a-1": ("10.0.0.6", KEY)})
    keys.paths.host_key("a-1").unlink()  # another run destroyed a-1
    keys.write_known_hosts({"a-2": ("10.0.0.5", KEY)})  # ... and gave a-0's address to a-2
    lines = keys.known_hosts.read_text().splitlines()
    assert [line.split()[0::3] for line in lines] == [["10.0.0.5", "a-2"]]
    keys.write_known_hosts({"a-2": ("10.0.0.5", None)})  # a-2 destroyed by this run
    assert keys.known_hosts.read_text() == ""


def test_verify_files_and_masters_are_per_run(test_fleet: model.Fleet, short_state: Path) -> None:
    state_dir = short_state
    first = verify.write_ssh_config(test_fleet, state_dir, "1111")
    second = verify.write_ssh_config(test_fleet, state_dir, "2222")
    assert first != second and first.exists() and second.exists()
    spec_a = verify.write_spec(test_fleet, [test_fleet.municipalities[0]], state_dir, run="1111")
    spec_b = verify.write_spec(test_fleet, [test_fleet.municipalities[1]], state_dir, run="2222")
    assert spec_a != spec_b, "one run's spec no longer replaces another's"
    slug = test_fleet.municipalities[0].slug

    def resolved_control_path(config: Path) -> str:
        out = subprocess.run(
            ["ssh", "-G", "-F", str(config), slug], capture_output=True, text=True, check=True
        ).stdout
        return next(line.split(None, 1)[1] for line in out.splitlines() if "controlpath" in line)

    a, b = resolved_control_path(first), resolved_control_path(second)
    assert a != b and "1111" in a and "2222" in b


def test_close_masters_only_names_its_own_config(
    test_fleet: model.Fleet, short_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = short_state
    calls: list[list[str]] = []
    monkeypatch.setattr(
        verify.subprocess,
        "run",
        lambda argv, **_kw: calls.append(argv) or subprocess.CompletedProcess(argv, 0),
    )
    mine = verify.write_ssh_config(test_fleet, state_dir, "1111")
    verify.close_masters(mine, list(test_fleet.municipalities))
    assert calls and all(c[:3] == ["ssh", "-F", str(mine)] and "-O" in c for c in calls)
    cp = verify.control_path(state_dir, "1111")
    assert cp is not None and cp.startswith(f"{state_dir}/cp/") and cp in mine.read_text()

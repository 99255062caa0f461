"""The real steps of a patch run: guests over SSH, the stack deploy through ansible-runner and
the testinfra checks, per municipality (:class:`~kallikratis.patch.PatchRun` is tested with
fakes of these).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kallikratis import addresses, model, siterun, verify
from kallikratis.guest import Guest
from kallikratis.patch import Progress, Steps
from kallikratis.provision import Engine


def fleet_steps(
    engine: Engine, progress: Progress, keep_artifacts: Callable[[Path], None]
) -> Steps:
    """Steps for *engine*'s fleet; *progress* gets (slug, phase) of every deploy task,
    *keep_artifacts* the artifacts directory of each (non-check) deploy."""

    def deploy(members: list[model.Municipality], check: bool) -> dict[str, tuple[bool, int, str]]:
        def task(slug: str, name: str) -> None:
            if name not in ("ok", "failed", "unreachable"):
                progress(slug, ("checking stack: " if check else "deploying: ") + name)

        run = siterun.run_site(
            engine.fleet.inventory,
            members,
            state_dir=engine.state_dir,
            check=check,
            progress=task,
            environment=addresses.to_env(engine.fleet),
        )
        if not check:
            keep_artifacts(run.artifacts)  # the journal keeps the last deploy's artifacts
        out = {}
        for slug, host in run.hosts.items():
            why = host.result
            if host.failures:
                why = f"task {host.failures[0][0]}: {host.failures[0][1][:300]}"
            out[slug] = (host.result == "ok", host.changed, why)
        return out

    def check(members: list[model.Municipality], maintenance: bool) -> dict[str, tuple[bool, str]]:
        checks, _took = verify.run(engine.fleet, members, engine.state_dir, maintenance=maintenance)
        out = {}
        for m in members:
            mine = [c for c in checks if c.slug in (m.slug, "*")]
            bad = [c for c in mine if not c.passed]
            if not mine:
                out[m.slug] = (False, "no checks ran")
            elif bad:
                out[m.slug] = (False, "; ".join(f"{c.name}: {c.message[:200]}" for c in bad[:3]))
            else:
                out[m.slug] = (True, "")
        return out

    return Steps(guest=lambda m: Guest(engine.target(m)), deploy=deploy, verify=check)

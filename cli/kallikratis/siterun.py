"""site.yml over a selection of VMs: the municipalities and the center's own VMs side by side.

The two kinds have plays of their own in site.yml, and ansible-playbook runs plays one after
the other: in one run, `control` would wait for every municipality (or they for it). Two runs
at the same time, one per kind, take as long as the slower one. Each has its own private
directory (``tag``) and its own ansible-playbook process; the results are merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from kallikratis import ansible, model, paths
from kallikratis.errors import KallikratisError


def site_roles(playbook: Path | None = None) -> list[str]:
    """The roles of site.yml, in play order, each once. site.yml tags every role entry with
    its own name, so these are also the tags `deploy --only` may name."""
    path = playbook or paths.PROJECT_ROOT / "playbooks" / "site.yml"
    try:
        plays = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KallikratisError(f"{path}: cannot read the playbook: {exc}") from exc
    roles: list[str] = []
    for play in plays or []:
        for entry in play.get("roles", []):
            name = entry["role"] if isinstance(entry, dict) else entry
            if name not in roles:
                roles.append(name)
    return roles


def run_site(
    inventory: Path, selection: Sequence[model.Municipality], **kwargs: Any
) -> ansible.PlaybookRun:
    """site.yml on *selection*; *kwargs* as :func:`kallikratis.ansible.run_playbook` takes them."""
    groups = [
        ("", [m.slug for m in selection if not m.is_central]),
        ("central", [m.slug for m in selection if m.is_central]),
    ]
    groups = [(tag, slugs) for tag, slugs in groups if slugs]
    if len(groups) <= 1:
        return ansible.run_playbook(
            "site.yml", inventory, limit=[m.slug for m in selection], **kwargs
        )
    with ThreadPoolExecutor(len(groups)) as pool:
        runs = list(
            pool.map(
                lambda g: ansible.run_playbook(
                    "site.yml", inventory, limit=g[1], tag=g[0], **kwargs
                ),
                groups,
            )
        )
    return merge(runs)


def merge(runs: Sequence[ansible.PlaybookRun]) -> ansible.PlaybookRun:
    """One result of runs made side by side: every host, the worst rc, the longest time; the
    first run's artifacts (the others' are next to it, same name with a -<tag> suffix)."""
    hosts: dict[str, ansible.HostOutcome] = {}
    for run in runs:
        hosts.update(run.hosts)
    first = runs[0]
    return replace(
        first,
        rc=max(r.rc for r in runs),
        seconds=max(r.seconds for r in runs),
        hosts=hosts,
        not_started="; ".join(r.not_started for r in runs if r.not_started)
        if all(r.not_started for r in runs)
        else "",
    )

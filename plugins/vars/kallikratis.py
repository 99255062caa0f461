"""Ansible vars plugin: the per-municipality values Kallikratis computes from the inventory.

Plain `ansible-playbook`/`ansible-inventory` and `kallikratis deploy` thus see the same values
(IP and MAC defaults, domain, modules, pinned SSH settings) from one computation, with no
generated copy of the inventory. Secrets are never returned here: only paths to
vault-encrypted files, which roles read with the `file` lookup (it decrypts vaulted files).
"""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleError
from ansible.inventory.host import Host
from ansible.plugins.vars import BaseVarsPlugin

DOCUMENTATION = """
    name: kallikratis
    short_description: per-municipality variables computed by Kallikratis
    description: Adds ansible_host, pinned SSH settings and kallikratis_* facts to municipalities.
    options: {}
"""

_CACHE: dict[str, Any] = {}


def _fleet(path: str) -> Any:
    """The fleet with the addresses its VMs have: handed down by `kallikratis` (deploy,
    patch), or read from libvirt here (plain ansible-playbook; a hypervisor that cannot be
    reached keeps the deterministic defaults, as `kallikratis render` does offline)."""
    from kallikratis import addresses
    from kallikratis.errors import KallikratisError

    key = os.path.realpath(path)
    if key not in _CACHE:
        try:
            handed = addresses.from_env()
            if handed is None:
                _CACHE[key] = addresses.load_actual(key)
            else:
                from kallikratis import inventory

                _CACHE[key] = addresses.settle(inventory.load(key), handed)
        except KallikratisError as exc:
            raise AnsibleError(f"kallikratis: {exc.message}") from exc
        except ValueError as exc:
            raise AnsibleError(f"kallikratis: bad {addresses.ENV}: {exc}") from exc
    return _CACHE[key]


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = True

    def get_vars(self, loader: Any, path: str, entities: Any, cache: bool = True) -> dict:
        super().get_vars(loader, path, entities)
        entities = entities if isinstance(entities, list) else [entities]
        hosts = [e for e in entities if isinstance(e, Host)]
        if not hosts or not os.path.exists(path):
            return {}
        if os.path.isdir(path) and not any(
            os.path.exists(os.path.join(path, n)) for n in ("hosts.yml", "hosts.yaml")
        ):
            return {}  # not a Kallikratis inventory directory
        from kallikratis import paths
        from kallikratis.stackvars import municipality_vars

        fleet = _fleet(path)
        out: dict = {}
        for host in hosts:
            if host.name in {m.slug for m in fleet.municipalities}:
                out.update(municipality_vars(fleet, fleet.get(host.name), paths.state_dir()))
        return out

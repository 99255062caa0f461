"""What a playbook run (deploy, patch) needs on the controller before it starts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kallikratis import model
from kallikratis.keys import KeyStore
from kallikratis.pki import FleetCA
from kallikratis.secrets import ensure_secrets


def prepare_stack(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path, selection: Iterable[model.Municipality]
) -> None:
    """The automation key, and each municipality's secrets and TLS certificate.

    With a `control` VM in *selection*, every municipality's secrets (its backup key).
    A municipality with tls: acme gets its certificate on the VM (certbot); the fleet CA is
    made (or given its name constraints) all the same: verify and the other VMs rely on it.
    """
    keys.ensure_client_key()
    ca = FleetCA(state_dir, fleet)
    ca.ensure_ca()
    selection = list(selection)
    for m in selection:
        ensure_secrets(fleet, m, keys)
        if m.tls == "fleet-ca":
            ca.ensure_cert(m)
    if any("control" in m.central_roles for m in selection):
        # control's backup store authorizes every municipality's backup key: make them all,
        # also for municipalities not deployed yet (generated once, kept in their vault.yml)
        for m in fleet.tenants:
            if m not in selection:
                ensure_secrets(fleet, m, keys)

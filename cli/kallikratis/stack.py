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
    """The automation key, and each municipality's secrets and TLS certificate."""
    keys.ensure_client_key()
    ca = FleetCA(state_dir, fleet)
    for m in selection:
        ensure_secrets(fleet, m, keys)
        ca.ensure_cert(m)

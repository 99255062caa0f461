"""Per-municipality application secrets, generated once, ansible-vault-encrypted in the inventory.

`host_vars/<slug>/vault.yml` is a whole-file vault that Ansible loads by itself; its values are
never printed or logged (roles use them under no_log).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml

from kallikratis import model
from kallikratis.errors import KallikratisError
from kallikratis.keys import KeyStore, atomic_write

SECRET_NAMES = (
    "vault_portal_admin_password",
    "vault_portal_db_password",
    "vault_education_admin_password",
    # header X-Kallikratis-Maintenance-Bypass: <token> is served normally in maintenance mode
    "vault_web_maintenance_bypass",
)

#: the central `control` VM's: the dashboard's basic-auth password (user kallikratis)
CONTROL_SECRET_NAMES = ("vault_monitoring_report_password",)


def secret_names(m: model.Municipality) -> tuple[str, ...]:
    """The secrets a VM's roles need: a municipality's stack, or a central VM's services."""
    if not m.is_central:
        return SECRET_NAMES
    return CONTROL_SECRET_NAMES if "control" in m.central_roles else ()


def vault_file(fleet: model.Fleet, slug: str) -> Path:
    return fleet.inventory / "host_vars" / slug / "vault.yml"


def _read_vault(path: Path, keys: KeyStore) -> dict[str, str]:
    try:
        plain = keys.vault().decrypt(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - ansible raises several error types
        raise KallikratisError(
            f"{path}: cannot decrypt with this fleet's vault password "
            f"({keys.vault_password_file()}): {exc}"
        ) from exc
    try:
        data = yaml.safe_load(plain) or {}
    except yaml.YAMLError:  # its message would quote the secrets
        raise KallikratisError(f"{path}: decrypted, but not valid YAML") from None
    if not isinstance(data, dict):
        raise KallikratisError(f"{path}: not a mapping of secrets")
    return data


def read_secret(fleet: model.Fleet, slug: str, keys: KeyStore, name: str) -> str:
    """One secret of a municipality's vault file (decrypted in memory only)."""
    path = vault_file(fleet, slug)
    if not path.exists():
        raise KallikratisError(f"{path}: no vault file yet (a deploy creates it)")
    value = _read_vault(path, keys).get(name)
    if not isinstance(value, str) or not value:
        raise KallikratisError(f"{path}: has no {name} yet (a deploy adds it)")
    return value


def ensure_secrets(fleet: model.Fleet, m: model.Municipality, keys: KeyStore) -> bool:
    """Create or complete the municipality's vault file; True when it was written."""
    path = vault_file(fleet, m.slug)
    vault = keys.vault()
    current: dict[str, str] = _read_vault(path, keys) if path.exists() else {}
    missing = [n for n in secret_names(m) if not current.get(n)]
    if not missing:
        return False
    for name in missing:
        current[name] = secrets.token_urlsafe(24)
    atomic_write(path, vault.encrypt(yaml.safe_dump(current).encode()), 0o600)
    return True

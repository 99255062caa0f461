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
from kallikratis.keys import KeyStore, atomic_write, generate, locked

SECRET_NAMES = (
    "vault_portal_admin_password",
    "vault_portal_db_password",
    "vault_education_admin_password",
    # header X-Kallikratis-Maintenance-Bypass: <token> is served normally in maintenance mode
    "vault_web_maintenance_bypass",
    # borg's repokey passphrase of the municipality's repository on control (roles/backup)
    "vault_backup_passphrase",
    # the SSH key the VM logs in to control's backup store with (roles/backup, backupstore)
    "vault_backup_ssh_key",
    "vault_backup_ssh_public_key",
)
#: generated together as one ed25519 key pair, not as random tokens
BACKUP_KEY_NAMES = ("vault_backup_ssh_key", "vault_backup_ssh_public_key")

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


def read_secrets(fleet: model.Fleet, slug: str, keys: KeyStore) -> dict[str, str]:
    """Every secret of a municipality's vault file (decrypted in memory only)."""
    path = vault_file(fleet, slug)
    if not path.exists():
        raise KallikratisError(f"{path}: no vault file yet (a deploy creates it)")
    return _read_vault(path, keys)


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
    """Create or complete the municipality's vault file; True when it was written.

    Under a lock per municipality: two runs (a deploy of control completes every tenant's
    backup key) never generate two different values of one secret.
    """
    path = vault_file(fleet, m.slug)
    vault = keys.vault()
    with locked(keys.dir / "vault-locks" / f"{m.slug}.lock"):
        current: dict[str, str] = _read_vault(path, keys) if path.exists() else {}
        missing = [n for n in secret_names(m) if not current.get(n)]
        if missing:
            if any(n in BACKUP_KEY_NAMES for n in missing):  # a pair, never half of one
                pair = generate(f"kallikratis-backup@{m.slug}")
                current["vault_backup_ssh_key"] = pair.private_openssh
                current["vault_backup_ssh_public_key"] = pair.public_openssh
            for name in missing:
                if name not in BACKUP_KEY_NAMES:
                    current[name] = secrets.token_urlsafe(24)
            atomic_write(path, vault.encrypt(yaml.safe_dump(current).encode()), 0o600)
        _publish_backup_key(keys, m.slug, current.get("vault_backup_ssh_public_key", ""))
    return bool(missing)


def _publish_backup_key(keys: KeyStore, slug: str, public: str) -> None:
    """The public half next to the fleet's known_hosts, for the control VM's variables
    (:func:`kallikratis.stackvars.central_vars` reads it without the vault password)."""
    if not public:
        return
    path = keys.paths.backup_public_key(slug)
    if not path.exists() or path.read_text().strip() != public:
        atomic_write(path, public + "\n", 0o600)

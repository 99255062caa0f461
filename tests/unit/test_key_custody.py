"""Key custody: no silent regeneration of the automation key or of the vault password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kallikratis import model, secrets
from kallikratis.errors import KallikratisError
from kallikratis.keys import VAULT_PASSWORD_ENV, KeyStore
from support import DATA, install_fixed_client_key


def test_a_lost_public_key_is_derived_from_the_private_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    install_fixed_client_key(state)
    private = state / "ssh" / "id_ed25519"
    before = private.read_bytes()
    (state / "ssh" / "id_ed25519.pub").unlink()
    public = KeyStore(state, "crete").ensure_client_key()
    assert private.read_bytes() == before, "the private key was replaced"
    expected = (DATA / "client_ed25519.pub").read_text().split()[:2]
    assert public.split()[:2] == expected
    assert (state / "ssh" / "id_ed25519.pub").read_text().split()[:2] == expected
    # what OpenSSH itself derives
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == expected


def test_a_lost_private_key_is_not_replaced_silently(tmp_path: Path) -> None:
    state = tmp_path / "state"
    install_fixed_client_key(state)
    (state / "ssh" / "id_ed25519").unlink()
    with pytest.raises(KallikratisError, match="Restore the private key"):
        KeyStore(state, "crete").ensure_client_key()
    assert not (state / "ssh" / "id_ed25519").exists()


def test_no_new_vault_password_while_host_keys_are_encrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VAULT_PASSWORD_ENV, raising=False)
    state = tmp_path / "state"
    keys = KeyStore(state, "crete")
    keys.host_key("hersonissos")  # first run: a password is made, the host key encrypted
    password = state / "vault-password"
    assert password.exists()
    password.unlink()  # lost (a restore without it, a careless cleanup)
    with pytest.raises(KallikratisError) as err:
        KeyStore(state, "crete").host_key("archanes-asterousia")
    assert "hersonissos.vault" in err.value.message
    assert "Restore" in err.value.message
    assert not password.exists(), "a new vault password was created"


def test_no_new_vault_password_while_the_inventory_has_vault_files(
    test_fleet: model.Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VAULT_PASSWORD_ENV, raising=False)
    vault_yml = secrets.vault_file(test_fleet, "hersonissos")
    vault_yml.parent.mkdir(parents=True, exist_ok=True)
    vault_yml.write_text("$ANSIBLE_VAULT;1.1;AES256\n3131\n")
    state = tmp_path / "fresh-controller"
    with pytest.raises(KallikratisError, match="vault.yml"):
        KeyStore(state, test_fleet.name, test_fleet.inventory).vault()
    assert not (state / "vault-password").exists()


def test_a_first_run_still_makes_its_vault_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VAULT_PASSWORD_ENV, raising=False)
    state = tmp_path / "state"
    KeyStore(state, "crete").vault()
    assert (state / "vault-password").stat().st_mode & 0o777 == 0o600

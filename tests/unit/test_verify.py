"""verify's inputs: the spec file (no secret in it), the maintenance bypass tokens (vault ->
environment of the suites only), and the per-municipality secrets behind them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kallikratis import model, verify
from kallikratis.errors import KallikratisError
from kallikratis.keys import KeyStore
from kallikratis.secrets import SECRET_NAMES, ensure_secrets, read_secret, vault_file
from support import InventoryCopy

BYPASS = "vault_web_maintenance_bypass"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,}$")  # what roles/web accepts


@pytest.fixture
def fleet(inv: InventoryCopy, vault_password: Path) -> model.Fleet:
    for lab_vault in inv.root.glob("host_vars/*/vault.yml"):  # the lab's, copied along
        lab_vault.unlink()
    inv.set_host_var_file("hersonissos", watch_services=["kallikratis-probe.service"])
    return inv.load()


@pytest.fixture
def keys(fleet: model.Fleet, state_dir: Path) -> KeyStore:
    return KeyStore(state_dir, fleet.name)


def _decrypt(fleet: model.Fleet, keys: KeyStore, slug: str) -> dict[str, str]:
    return yaml.safe_load(keys.vault().decrypt(vault_file(fleet, slug).read_bytes()))


# --------------------------------------------------------------------------- secrets


def test_the_bypass_token_is_a_generated_secret(fleet: model.Fleet, keys: KeyStore) -> None:
    assert BYPASS in SECRET_NAMES
    m = fleet.get("hersonissos")
    assert ensure_secrets(fleet, m, keys) is True
    token = read_secret(fleet, m.slug, keys, BYPASS)
    assert TOKEN_RE.match(token)
    assert token.encode() not in vault_file(fleet, m.slug).read_bytes()  # encrypted at rest
    assert ensure_secrets(fleet, m, keys) is False
    assert read_secret(fleet, m.slug, keys, BYPASS) == token


def test_an_existing_vault_gets_the_token_and_keeps_its_secrets(
    fleet: model.Fleet, keys: KeyStore
) -> None:
    old = {n: f"old-{n}-0123456789" for n in SECRET_NAMES if n != BYPASS}
    path = vault_file(fleet, "minoa-pediada")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(keys.vault().encrypt(yaml.safe_dump(old).encode()))
    with pytest.raises(KallikratisError, match=f"has no {BYPASS} yet"):
        read_secret(fleet, "minoa-pediada", keys, BYPASS)
    assert ensure_secrets(fleet, fleet.get("minoa-pediada"), keys) is True
    now = _decrypt(fleet, keys, "minoa-pediada")
    assert {k: now[k] for k in old} == old
    assert TOKEN_RE.match(now[BYPASS])


def test_read_secret_errors_name_the_file(
    fleet: model.Fleet, keys: KeyStore, vault_password: Path
) -> None:
    path = vault_file(fleet, "hersonissos")
    with pytest.raises(KallikratisError, match="no vault file yet") as err:
        read_secret(fleet, "hersonissos", keys, BYPASS)
    assert str(path) in err.value.message
    ensure_secrets(fleet, fleet.get("hersonissos"), keys)
    token = read_secret(fleet, "hersonissos", keys, BYPASS)
    vault_password.write_text("another-password\n")
    with pytest.raises(KallikratisError, match="cannot decrypt") as err:
        read_secret(fleet, "hersonissos", keys, BYPASS)
    assert token not in err.value.message


# --------------------------------------------------------------------------- verify spec and run


@pytest.mark.parametrize("maintenance", [False, True])
def test_spec_has_watch_services_and_maintenance_and_no_secret(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path, maintenance: bool
) -> None:
    for m in fleet.municipalities:
        ensure_secrets(fleet, m, keys)
    path = verify.write_spec(fleet, list(fleet.municipalities), state_dir, maintenance=maintenance)
    text = path.read_text()
    spec = json.loads(text)
    assert spec["hersonissos"]["watch_services"] == ["kallikratis-probe.service"]
    assert spec["minoa-pediada"]["watch_services"] == []
    assert all(entry["maintenance"] is maintenance for entry in spec.values())
    for m in fleet.municipalities:
        for secret in _decrypt(fleet, keys, m.slug).values():
            assert secret not in text


class FakePytest:
    """Stands in for the suites' subprocess: records argv/env, writes a JUnit report."""

    def __init__(self, failure: str = "") -> None:
        self.failure = failure
        self.env: dict[str, str] = {}
        self.spec = ""
        self.closed: list[str] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if argv[0] == "ssh":  # closing the run's SSH control masters
            self.closed.append(argv[-1])
            return subprocess.CompletedProcess(argv, 255, "", "")
        self.env = kwargs["env"]
        self.spec = Path(self.env[verify.SPEC_ENV]).read_text()
        junit = Path(next(a for a in argv if a.startswith("--junitxml=")).split("=", 1)[1])
        case = '<testcase classname="test_web" name="test_home[ssh://hersonissos]"'
        body = f'><failure message="{self.failure}"/></testcase>' if self.failure else "/>"
        junit.write_text(f"<testsuites><testsuite>{case}{body}</testsuite></testsuites>")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_tokens_reach_the_suites_only_through_the_environment(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    herso = fleet.get("hersonissos")
    ensure_secrets(fleet, herso, keys)
    token = read_secret(fleet, herso.slug, keys, BYPASS)
    fake = FakePytest(failure=f"headers were {{'{verify.BYPASS_HEADER}': '{token}'}}")
    monkeypatch.setattr(verify.subprocess, "run", fake)
    checks, _ = verify.run(fleet, list(fleet.municipalities), state_dir, maintenance=True)
    assert json.loads(fake.env[verify.BYPASS_ENV]) == {"hersonissos": token}
    assert token not in fake.spec and json.loads(fake.spec)["hersonissos"]["maintenance"]
    # never deployed with a token: in maintenance mode it cannot be verified
    missing = {c.slug for c in checks if c.name == "maintenance_bypass_token"}
    assert missing == {"archanes-asterousia", "minoa-pediada"}
    assert all(not c.passed for c in checks if c.slug in missing)
    [home] = [c for c in checks if c.slug == "hersonissos"]
    assert not home.passed and token not in home.message and "<redacted>" in home.message


def test_plain_verify_sends_known_tokens_and_needs_none(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_secrets(fleet, fleet.get("minoa-pediada"), keys)
    fake = FakePytest()
    monkeypatch.setattr(verify.subprocess, "run", fake)
    checks, _ = verify.run(fleet, list(fleet.municipalities), state_dir)
    assert set(json.loads(fake.env[verify.BYPASS_ENV])) == {"minoa-pediada"}
    assert not any(entry["maintenance"] for entry in json.loads(fake.spec).values())
    assert [(c.slug, c.passed) for c in checks] == [("hersonissos", True)]


def test_the_suites_ship_with_the_package_and_stay_out_of_the_test_run() -> None:
    import configparser

    assert verify.SUITES.parent == Path(verify.__file__).resolve().parent
    assert (verify.SUITES / "conftest.py").is_file()
    assert sorted(p.name for p in verify.SUITES.glob("test_*.py"))
    assert not (verify.SUITES / "__init__.py").exists()  # pytest's rootdir import, as before
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    assert "checks/*.py" in cfg["options.package_data"]["kallikratis"]
    assert cfg["tool:pytest"]["testpaths"].split() == ["tests/unit", "tests/e2e"]

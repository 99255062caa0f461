"""Where things live: the project checkout (templates, recipes) and the state directory.

:class:`StateDir` names every path under the state directory; nothing else spells them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = PROJECT_ROOT / "templates"
STATE_ENV = "KALLIKRATIS_STATE_DIR"


def images_dir() -> Path:
    return Path(os.environ.get("KALLIKRATIS_IMAGES_DIR", PROJECT_ROOT / "vm_images"))


def state_dir() -> Path:
    """Keys, vault password, image cache: outside the inventory, never in git."""
    default = "/var/lib/kallikratis" if os.geteuid() == 0 else "~/.local/share/kallikratis"
    return Path(os.environ.get(STATE_ENV, default)).expanduser()


def image_cache_dir() -> Path:
    return Path(os.environ.get("KALLIKRATIS_IMAGE_CACHE", state_dir() / "images"))


@dataclass(frozen=True)
class StateDir:
    """Every path under the state directory, named once (0700; files in it 0600)."""

    root: Path

    @property
    def client_key(self) -> Path:
        """The automation SSH key (private half; the public one is ``.pub`` next to it)."""
        return self.root / "ssh" / "id_ed25519"

    @property
    def vault_password(self) -> Path:
        return self.root / "vault-password"

    @property
    def runs(self) -> Path:
        """ansible-runner's private data directories, one per playbook run."""
        return self.root / "runs"

    @property
    def journal(self) -> Path:
        return self.root / "journal.sqlite"

    def fleet(self, name: str) -> FleetState:
        return FleetState(self, name)


@dataclass(frozen=True)
class FleetState:
    """The paths of one fleet under the state directory."""

    state: StateDir
    name: str

    @property
    def dir(self) -> Path:
        return self.state.root / "fleets" / self.name

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def host_key(self, slug: str) -> Path:
        """A municipality's SSH host key, vault-encrypted."""
        return self.dir / "host-keys" / f"{slug}.vault"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The fleet CA's key, vault-encrypted."""
        return self.dir / "pki" / "ca.key.vault"

    def tls_cert(self, slug: str) -> Path:
        return self.dir / "pki" / f"{slug}.crt"

    def tls_key(self, slug: str) -> Path:
        """A municipality's TLS key, vault-encrypted."""
        return self.dir / "pki" / f"{slug}.key.vault"

    def ssh_config(self, run: str = "") -> Path:
        """The ssh_config `verify` hands to testinfra; one per run (*run*: its id), so two
        runs never rewrite each other's."""
        return self.dir / (f"ssh_config-{run}" if run else "ssh_config")

    def verify_spec(self, run: str = "") -> Path:
        """What the suites expect of each municipality; one per run, like the ssh_config."""
        return self.dir / (f"verify-spec-{run}.json" if run else "verify-spec.json")

    def verify_report(self, pid: int) -> Path:
        return self.dir / f"verify-{pid}.xml"

    @property
    def locks(self) -> Path:
        return self.state.root / "locks" / self.name

"""Where things live: the project checkout (templates, recipes) and the state directory.

:class:`StateDir` names every path under the state directory; nothing else spells them out.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kallikratis.errors import KallikratisError

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


#: the longest ``sun_path`` of a unix socket (108 bytes with its NUL on Linux)
SOCKET_PATH_MAX = 107
#: what follows the socket directory in the longest socket path of each user, with OpenSSH's
#: temporary ``.XXXXXXXXXXXXXXXX`` while it creates a master: verify's ``/v<run>-%C`` (40 hex),
#: Ansible's ``/`` + a 10-character hash, mitogen's ``/mitogen_unix_XXXXXXXX.sock``
VERIFY_SOCKET_TAIL = 2 + 7 + 1 + 40 + 17  # /v<run, a pid>-%C
ANSIBLE_SOCKET_TAIL = 1 + 10 + 17
MITOGEN_SOCKET_TAIL = 1 + 26


def private_dir(path: Path, *, follow: bool = False) -> Path:
    """*path* as a directory only we can enter: created 0700, an existing one tightened to 0700.

    A directory owned by someone else, or a symlink in its place, is refused rather than fixed:
    whoever owns it can already have planted files (sockets, keys) in it, and chmod would not
    take them out. A directory of ours that is merely too open (0755 from older versions) is
    tightened, which is all it takes. *follow*: the state directory itself may be a symlink
    an administrator made (to another disk); what it points to is checked.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat() if follow else path.lstat()
    except OSError as exc:
        raise KallikratisError(f"cannot create the private directory {path}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KallikratisError(f"{path} must be a directory, not a symlink or a file: remove it")
    if st.st_uid != os.geteuid():
        raise KallikratisError(
            f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): another user "
            "could have planted files in it; remove it (it holds nothing we cannot recreate "
            "but keys: move those aside first) and run again"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> None:
    """Tighten an existing file of the state directory to 0600 (a missing one is fine)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def _tighten_dir(path: Path) -> None:
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


@dataclass(frozen=True)
class StateDir:
    """Every path under the state directory, named once (0700; files in it 0600)."""

    root: Path

    @property
    def client_key(self) -> Path:
        """The automation SSH key (private half; the public one is ``.pub`` next to it)."""
        return self.root / "ssh" / "id_ed25519"

    @property
    def previous_client_key(self) -> Path:
        """The automation key before `keys rotate`, kept while some VM may still trust only it."""
        return self.root / "ssh" / "id_ed25519.old"

    @property
    def next_client_key(self) -> Path:
        """A rotation's new key, between its generation and its promotion (crash-safe)."""
        return self.root / "ssh" / "id_ed25519.next"

    @property
    def rotation(self) -> Path:
        """Which VMs of which fleet still trust only the previous automation key (JSON)."""
        return self.root / "ssh" / "rotation.json"

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

    @property
    def sockets(self) -> Path:
        """SSH control sockets (Ansible's, verify's) and mitogen's: never in a shared /tmp."""
        return self.root / "cp"

    def socket_dir(self, tail: int) -> Path | None:
        """:attr:`sockets`, or None when a socket *tail* bytes longer would not fit a unix
        socket's 108 bytes (then the caller does without: no multiplexing beats /tmp)."""
        return self.sockets if len(str(self.sockets)) + tail <= SOCKET_PATH_MAX else None

    def verify_control_path(self, run: str = "") -> str | None:
        """verify's ssh ControlPath of one run: OpenSSH's %C is a 40-hex hash, so the length
        is bounded; None when it would not fit a unix socket."""
        cp = self.socket_dir(VERIFY_SOCKET_TAIL)
        return str(cp / f"v{run}-%C") if cp else None

    def secure(self) -> StateDir:
        """Create or tighten the state directory: every directory 0700, every file 0600.

        Runs before any command reads or writes secrets here, so a state directory made by an
        older version (0755 directories, a 0644 journal) is tightened in place.
        """
        private_dir(self.root, follow=True)
        for sub in (self.root / "fleets", self.root / "ssh", self.sockets):
            private_dir(sub)
        for entry in self.root.iterdir():  # runs, locks, images...: 0700 too
            private_file(entry)
            if entry.is_dir() and not entry.is_symlink():
                _tighten_dir(entry)
        for tree in (self.root / "fleets", self.root / "ssh"):  # the secret-bearing files
            for directory, _dirs, files in os.walk(tree):
                _tighten_dir(Path(directory))
                for name in files:
                    private_file(Path(directory) / name)
        return self

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

    def backup_public_key(self, slug: str) -> Path:
        """The public half of a municipality's backup SSH key (the private half is in its
        vault.yml): what the control VM's backup store authorizes."""
        return self.dir / "backup-keys" / f"{slug}.pub"

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

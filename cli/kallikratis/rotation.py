"""`keys rotate`: a new automation SSH key onto every selected VM, the old one off it.

For each VM, over the pinned SSH path: the new public key is appended to the admin user's
authorized_keys (logging in with the old key), a login with the new key is verified, the old
key is removed (logging in with the new one), and both facts are checked again: the new key
logs in, the old one no longer does. A VM that cannot be reached keeps the old key.

Key files in ``<state>/ssh/``: ``id_ed25519`` is always the newest key (new VMs' seeds carry
it; SSH offers it first). While some VM may still trust only the previous key, that key stays
as ``id_ed25519.old`` and every SSH path (engine, Ansible, verify) offers it second;
``rotation.json`` names, per fleet, the VMs still pending (``null``: a fleet sharing this
state directory whose VMs no rotate run has looked at yet). The old key is deleted when no
fleet has a VM pending. A rotate run while one is pending finishes it: no third key.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from kallikratis.keys import KeyStore, atomic_write, generate
from kallikratis.ssh import SshTarget, login_works

log = logging.getLogger(__name__)

_ADD = (
    "umask 077; mkdir -p ~/.ssh; k=$(cat); touch ~/.ssh/authorized_keys; "
    'grep -qxF -- "$k" ~/.ssh/authorized_keys || printf \'%s\\n\' "$k" >> ~/.ssh/authorized_keys'
)
_REMOVE = (  # every line carrying the old key's blob, whatever its options or comment
    "umask 077; b=$(cat); f=~/.ssh/authorized_keys; "
    'grep -vF -- "$b" "$f" > "$f.kk-rotate"; mv -f "$f.kk-rotate" "$f"'
)


@dataclass(frozen=True)
class RotateResult:
    slug: str
    result: str  # rotated | unchanged | absent | would rotate | failed
    detail: str = ""
    seconds: float = 0.0
    ssh_seconds: float | None = None


def _run(target: SshTarget, script: str, data: str, timeout: float = 60.0) -> bool:
    argv = target.argv([script])
    argv[1:1] = ["-o", "ConnectTimeout=10"]
    try:
        done = subprocess.run(argv, input=data.encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class Rotation:
    """The rotation state of a state directory (see the module's docstring)."""

    def __init__(self, keys: KeyStore, fleet: str) -> None:
        self.keys = keys
        self.fleet = fleet
        self.state = keys.state

    def pending(self) -> dict[str, list[str] | None]:
        path = self.state.rotation
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return {str(k): v for k, v in data.get("pending", {}).items()}

    def _save(self, pending: dict[str, list[str] | None]) -> None:
        atomic_write(self.state.rotation, json.dumps({"pending": pending}, indent=2) + "\n")

    def start(self) -> bool:
        """Make a new key current, the current one previous (unless a rotation is pending);
        True when a new key was made. Crash-safe: rerunning finishes a half-made start."""
        self.keys.secure()
        cur, old, nxt = (
            self.state.client_key,
            self.state.previous_client_key,
            self.state.next_client_key,
        )
        if old.exists() and not nxt.exists() and cur.exists():
            return False  # pending: finish it
        if not nxt.exists():
            self.keys.ensure_client_key()  # the key every VM trusts now
            pair = generate("kallikratis-automation")
            atomic_write(_pub(nxt), pair.public_openssh + "\n")
            atomic_write(nxt, pair.private_openssh)
            fleets = [p.name for p in (self.state.root / "fleets").iterdir() if p.is_dir()]
            self._save(dict.fromkeys(sorted({*fleets, self.fleet})))
        # each step once, whatever step a killed run reached (a rerun finishes the rest)
        if cur.exists() and nxt.exists():
            os.replace(cur, old)
        if _pub(cur).exists() and _pub(nxt).exists() and not _pub(old).exists():
            os.replace(_pub(cur), _pub(old))
        if _pub(nxt).exists():
            os.replace(_pub(nxt), _pub(cur))
        if nxt.exists():
            os.replace(nxt, cur)
        log.info("new automation key %s; the previous one kept as %s", cur, old)
        return True

    def finish(self, fleet_pending: list[str]) -> None:
        """Record this fleet's VMs still pending; drop the old key when none anywhere is."""
        pending = self.pending()
        pending[self.fleet] = sorted(fleet_pending)
        if all(v == [] for v in pending.values()):
            old = self.state.previous_client_key
            old.unlink(missing_ok=True)
            _pub(old).unlink(missing_ok=True)
            self.state.rotation.unlink(missing_ok=True)
            log.info("every VM has the new automation key; the previous one is deleted")
        else:
            self._save(pending)


def _pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub") if key.suffix else key.with_suffix(".pub")


def rotate_one(target: SshTarget, new: Path, old: Path) -> tuple[str, str]:
    """Move one VM from the *old* key to the *new* one: (result, detail)."""
    with_new = replace(target, identity=new, more_identities=())
    with_old = replace(target, identity=old, more_identities=())
    new_pub = _pub(new).read_text().strip()
    old_blob = _pub(old).read_text().split()[1]
    if not login_works(with_new):
        if not login_works(with_old):
            return "failed", "unreachable with either key: it keeps the old one (still offered)"
        if not _run(with_old, _ADD, new_pub + "\n") or not login_works(with_new):
            return "failed", "could not install the new key: it keeps the old one"
    if not _run(with_new, _REMOVE, old_blob + "\n"):
        return "failed", "the new key works, but removing the old one failed"
    if not login_works(with_new):
        return "failed", "the new key stopped working after the old one was removed"
    if login_works(with_old):
        return "failed", "the old key still logs in after its removal"
    return "rotated", "new key in, old key out (both checked)"


def rotate(
    keys: KeyStore,
    fleet: str,
    targets: Mapping[str, SshTarget | None],
    fleet_vms: list[str],
    *,
    dry_run: bool = False,
    parallel: int = 8,
) -> list[RotateResult]:
    """Rotate the automation key on *targets* (slug -> its SSH target; None: no VM).

    *fleet_vms*: every municipality of the fleet that has a VM, selected or not: those not
    rotated by this run stay pending (and the old key with them).
    """
    rotation = Rotation(keys, fleet)
    known = rotation.pending().get(fleet) if keys.state.previous_client_key.exists() else None
    todo = set(known) if known is not None else set(fleet_vms)
    if dry_run:
        return [
            RotateResult(s, "absent" if t is None else "would rotate" if s in todo else "unchanged")
            for s, t in targets.items()
        ]
    rotation.start()
    new, old = keys.state.client_key, keys.state.previous_client_key

    def one(slug: str, target: SshTarget | None) -> RotateResult:
        start = time.monotonic()
        if target is None:
            return RotateResult(slug, "absent", "no VM: its first seed has the new key")
        if slug not in todo:
            return RotateResult(slug, "unchanged", "already has the new key only")
        result, detail = rotate_one(target, new, old)
        return RotateResult(slug, result, detail, time.monotonic() - start)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets)))) as pool:
        results = list(pool.map(lambda item: one(*item), targets.items()))
    todo -= {r.slug for r in results if r.result in ("rotated", "absent")}
    rotation.finish(sorted(todo))
    return results

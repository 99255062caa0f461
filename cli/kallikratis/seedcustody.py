"""The host private key leaves the seed once the VM has booted with it.

`up` writes a first-boot seed that carries the VM's SSH host key (private half) so that the
key is pinned before first contact. Once a login with the pinned key works, the key is in the
VM's /etc/ssh and nowhere else is it needed: :func:`retire` overwrites the seed volume in place
with the *retired* seed (no private key, cloud-init told to keep the keys it finds, same
instance-id) and records that in the domain's metadata, so later `up` runs keep writing the
retired seed and a reboot or a new instance-id keeps the pinned key.
"""

from __future__ import annotations

import logging
import subprocess
from typing import TYPE_CHECKING

from kallikratis import model, vmresources
from kallikratis.documents import VmKeys, compose
from kallikratis.errors import KallikratisError

if TYPE_CHECKING:
    from kallikratis.provision import Engine

log = logging.getLogger(__name__)


def flush_guest(engine: Engine, m: model.Municipality, timeout: float = 60.0) -> bool:
    """`sync` in the VM over the pinned SSH path: its host keys are on its disk, not only in
    its page cache, before the seed forgets them. False when it does not answer."""
    argv = engine.target(m).argv(["sync"])
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def retire(engine: Engine, m: model.Municipality) -> bool:
    """Rewrite *m*'s seed without the host's private key; True when something changed.

    Call only after a login with the pinned host key has worked (the boot is confirmed).
    Idempotent: a VM whose seed is already retired is left alone.
    """
    be = engine.backend(m.hypervisor)
    dom = be.domain(m.vm_name)
    if dom is None:
        raise KallikratisError(f"{m.slug}: no domain, so no boot to confirm")
    if dom.seed_retired and be.volume(engine.fleet.pool.name, m.seed_volume) is not None:
        return False
    host_key = engine.keys.host_key(m.slug, create=False)
    if host_key is None:
        raise KallikratisError(f"{m.slug}: no host key in the state directory")
    keys = VmKeys(host_key, engine.keys.ensure_client_key())
    docs = compose(engine.fleet, m, keys, dom.image, retired=True)
    # the domain's spec is kept as it is: only a later `up` applies inventory changes
    if dom.spec_hash != docs.spec_hash:
        log.info("%s: spec changed since it booted; the seed is retired at the next up", m.slug)
        return False
    vmresources.write_seed(be, engine.fleet, m, docs.seed)
    be.define_domain(docs.domain)
    log.info("%s: host private key removed from the seed", m.slug)
    return True

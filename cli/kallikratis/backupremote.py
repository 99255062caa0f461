"""The off-site second copy (``backup_remote``) and the two legs of a backup on a VM.

roles/backup writes one borgmatic file per repository: ``/etc/borgmatic/config.yaml``
(control's store) and, when the fleet has a ``backup_remote``, ``/etc/borgmatic/offsite.yaml``
(the remote's ``<path>/<slug>``, same passphrase, repokey-blake2). A backup runs both, one
after the other, in one SSH session: each leg initialises its repository if it is missing,
then makes one archive, and reports its own JSON or its own error. One file per repository,
not one file with two repositories: borgmatic (1.7 measured here, and the same code path in
later releases) prints no JSON at all for a configuration file in which any repository
failed, so a remote that is down would hide the archive control did get.

The remote is run by someone else: each VM's backup key is authorized there with the line
:func:`authorized_keys_line` prints (``kallikratis backup remote-keys``), forced to ``borg
serve --append-only --restrict-to-repository <path>/<slug>``: the VM can add archives, never
delete them; pruning and compaction on the remote are its operator's (README).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kallikratis import model
from kallikratis.errors import KallikratisError
from kallikratis.paths import FleetState
from kallikratis.stackvars import REMOTE_LABEL

#: roles/backup's backup_config_file and backup_offsite_config_file
CONTROL_CONFIG = "/etc/borgmatic/config.yaml"
OFFSITE_CONFIG = "/etc/borgmatic/offsite.yaml"
CONTROL_LABEL = "control"
LEG_MARK = "#kk-leg "
ERR_MARK = "#kk-err "
#: the leg's exit code when the VM has no off-site configuration yet (not deployed since)
NOT_CONFIGURED = 3
NOT_CONFIGURED_WHY = (
    "the VM has no off-site configuration yet ({path}): `kallikratis deploy {slug}` first"
)


@dataclass(frozen=True)
class Leg:
    """One repository's part of a backup: the archive made, or why not."""

    label: str
    json: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


#: what is not borgmatic's own message in its standard error: Python tracebacks (of a logging
#: handler that failed, e.g. syslog without a listener), blank lines, the help link
_NOISE = " ".join(
    f"-e {shlex.quote(p)}"
    for p in (
        "^[[:space:]]",
        "^$",
        "^Traceback",
        "^During handling",
        "^--- Logging error",
        "^Call stack:",
        "^Message: ",
        "^Arguments: ",
        "Need some help",
        "^[A-Za-z]*Error: \\[Errno",
    )
)


def create_script(
    slug: str,
    remote: bool,
    *,
    encryption: str,
    control_config: str = CONTROL_CONFIG,
    offsite_config: str = OFFSITE_CONFIG,
) -> str:
    """On the VM: control's leg, then (*remote*) the off-site leg. Each leg's JSON goes to
    standard output followed by a ``#kk-leg LABEL EXIT`` line and, when it failed, the tail
    of borgmatic's messages as ``#kk-err`` lines. The script itself does not fail."""
    missing = NOT_CONFIGURED_WHY.format(path=offsite_config, slug=slug)
    lines = [
        "exec 3>&1",
        "if borgmatic repo-create --help >/dev/null 2>&1; then action=repo-create; "
        "else action=init; fi",
        "kk_leg() {",
        "  kk_rc=0",
        '  kk_err=$( { borgmatic --config "$2" "$action" '
        f"--encryption {shlex.quote(encryption)} >/dev/null && "
        'borgmatic --config "$2" create --json >&3; } 2>&1 ) || kk_rc=$?',
        f'  printf \'\\n{LEG_MARK}%s %s\\n\' "$1" "$kk_rc"',
        f'  if [ "$kk_rc" -ne 0 ]; then printf \'%s\\n\' "$kk_err" | grep -v {_NOISE} '
        f"| tail -n 12 | sed 's/^/{ERR_MARK}/'; fi",
        "}",
        f"kk_leg {CONTROL_LABEL} {shlex.quote(control_config)}",
    ]
    if remote:
        lines.append(
            f"if [ -f {shlex.quote(offsite_config)} ]; then "
            f"kk_leg {REMOTE_LABEL} {shlex.quote(offsite_config)}; "
            f"else printf '\\n{LEG_MARK}%s {NOT_CONFIGURED}\\n{ERR_MARK}%s\\n' "
            f"{REMOTE_LABEL} {shlex.quote(missing)}; fi"
        )
    return "\n".join(lines) + "\n"


def parse_legs(text: str) -> dict[str, Leg]:
    """The legs of :func:`create_script`'s output, by label. Output without any leg line is
    borgmatic's own JSON of a single repository: control's leg."""
    legs: dict[str, Leg] = {}
    errors: dict[str, list[str]] = {}
    codes: dict[str, str] = {}
    pending: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.startswith(LEG_MARK):
            words = line[len(LEG_MARK) :].split()
            if len(words) != 2:
                raise KallikratisError(f"backup script: a malformed leg line {line[:200]!r}")
            current, codes[current] = words[0], words[1]
            legs[current] = Leg(current, json="\n".join(pending).strip())
            errors[current], pending = [], []
        elif line.startswith(ERR_MARK) and current:
            errors[current].append(line[len(ERR_MARK) :])
        else:
            pending.append(line)
    if not legs:
        return {CONTROL_LABEL: Leg(CONTROL_LABEL, json=text.strip())}
    out = {}
    for label, leg in legs.items():
        if codes[label] == "0":
            out[label] = leg
        else:
            # whole (the script kept 12 lines at most): the cause is often at the start, and a
            # long repository path pushed it out of a 600-character tail on real VMs
            said = " ".join(e.strip() for e in errors[label] if e.strip())
            out[label] = Leg(label, error=said or f"borgmatic exited {codes[label]}")
    return out


#: what ssh and borg say when the remote is the problem, and what the sysadmin should do
_REMOTE_CAUSES = (
    (
        # borg passes on the first line of ssh's complaint only: its banner of @ signs
        ("Host key verification failed", "HOST IDENTIFICATION HAS CHANGED", "Remote: @@@@@@@@"),
        "the remote's SSH host key is not the one pinned in backup_remote.host_key (a new "
        "server, or someone in between): check it with the remote's operator",
    ),
    (
        ("Permission denied (publickey",),
        "the remote does not accept this VM's backup key yet: its operator installs the line "
        "`kallikratis backup remote-keys` prints",
    ),
    (
        (
            "Connection refused",
            "Connection timed out",
            "No route to host",
            "Could not resolve",
            # what borg 1.4 alone says (exit 81) when ssh could not connect: seen on real VMs
            "Connection closed by remote host",
        ),
        "the remote cannot be reached",
    ),
)


def explain(message: str) -> str:
    """A failed off-site leg, in the sysadmin's terms where ssh's words are known."""
    for needles, why in _REMOTE_CAUSES:
        if any(n in message for n in needles):
            return f"{why}. borg said: {message[-300:]}"
    return message[-600:]


# -- the remote's operator -----------------------------------------------------------------------
def forced_command(remote: model.BackupRemote, slug: str) -> str:
    path = remote.repository_path(slug)
    return f"borg serve --append-only --restrict-to-repository {shlex.quote(path)}"


def authorized_keys_line(remote: model.BackupRemote, slug: str, public_key: str) -> str:
    """The line the remote's operator adds for *slug*'s VM (its backup PUBLIC key): serve
    its own repository only, append-only, nothing else (no shell, no forwarding)."""
    words = public_key.split()
    if len(words) < 2 or words[0] != "ssh-ed25519" or not public_key.isprintable():
        raise KallikratisError(f"{slug}: the backup public key is malformed: {public_key[:80]!r}")
    key = " ".join(words[:2])
    return f'restrict,command="{forced_command(remote, slug)}" {key} kallikratis-backup@{slug}'


def public_keys(tenants: list[model.Municipality], paths: FleetState) -> dict[str, str]:
    """slug -> the public half of its backup key as the controller keeps it ("" = none yet)."""
    out = {}
    for m in tenants:
        path = paths.backup_public_key(m.slug)
        out[m.slug] = path.read_text().strip() if path.exists() else ""
    return out


@dataclass(frozen=True)
class RemoteKey:
    slug: str
    repository: str
    authorized_keys: str  # "" while the municipality has no backup key yet


def remote_keys(
    tenants: list[model.Municipality], public_key_of: Mapping[str, str]
) -> list[RemoteKey]:
    """Per municipality with a ``backup_remote``: its repository and authorized_keys line."""
    out = []
    for m in tenants:
        if m.backup_remote is None:
            continue
        key = public_key_of.get(m.slug, "")
        line = authorized_keys_line(m.backup_remote, m.slug, key) if key else ""
        out.append(RemoteKey(m.slug, m.backup_remote.repository(m.slug), line))
    return out


# -- reading the remote's archives (through the VM: only its key is authorized there) ----------
def archives_script(offsite_config: str = OFFSITE_CONFIG) -> str:
    return (
        f"test -f {shlex.quote(offsite_config)} || {{ echo 'no off-site configuration on "
        f"this VM ({offsite_config}): deploy it first' >&2; exit 3; }}\n"
        f"borgmatic --config {shlex.quote(offsite_config)} info --json --last 100000\n"
    )


def info_of_one(text: str) -> str:
    """borgmatic's ``info --json`` (a list, one result per repository) as borg's own JSON."""
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise KallikratisError(f"borgmatic info --json: not JSON ({exc}): {text[:200]!r}") from None
    if isinstance(data, list):
        if len(data) != 1:
            raise KallikratisError(
                f"borgmatic info --json: expected one repository, got {len(data)}"
            )
        data = data[0]
    return json.dumps(data)

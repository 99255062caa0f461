"""Inventory fields of the public endpoints: admin allow-list, TLS issuer, ACME account.

Pure parsing like :mod:`kallikratis.fleetfields`: each function takes the raw value and returns
the model value plus a list of (field, message) problems; :mod:`kallikratis.inventory` adds file
and entry. Every string is hostile until proven otherwise: these values end up in nginx
configuration and in certbot's command line on the VM.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kallikratis import model
from kallikratis.checker import is_fqdn
from kallikratis.fleetfields import has_control

Problems = list[tuple[str, str]]

#: the pilot keeps working: the admin paths are open to everyone unless a fleet says otherwise
ADMIN_ALLOW_DEFAULT = ("0.0.0.0/0", "::/0")
EMAIL_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&*+/=?^_`{|}~.-]{1,64}")
ACME_KEYS = ("acme_directory", "acme_email", "acme_ca_bundle", "acme_roots")
PEM_CERT = "-----BEGIN CERTIFICATE-----"


def admin_allow(value: Any) -> tuple[tuple[str, ...], Problems]:
    """`admin_allow`: the networks (CIDR) allowed on the admin paths of every VM."""
    if value is None:
        return ADMIN_ALLOW_DEFAULT, []
    if not isinstance(value, list) or not value:
        why = f"must be a non-empty list of networks (CIDR, e.g. 10.0.0.0/8), got {value!r}"
        return ADMIN_ALLOW_DEFAULT, [("admin_allow", why)]
    problems: Problems = []
    out: list[str] = []
    for i, entry in enumerate(value):
        try:
            if not isinstance(entry, str) or has_control(entry) or entry != entry.strip():
                raise ValueError("not a string")
            net = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            problems.append(
                (f"admin_allow[{i}]", f"not a network in CIDR notation ({exc}): {entry!r}")
            )
            continue
        if str(net) not in out:
            out.append(str(net))
    if problems:
        return ADMIN_ALLOW_DEFAULT, problems
    return tuple(out), []


def tls_mode(value: Any) -> tuple[str, Problems]:
    """`tls`: who issues the municipality's certificate (the fleet CA, or ACME on the VM)."""
    if value is None:
        return model.TLS_MODES[0], []
    if value not in model.TLS_MODES:
        return model.TLS_MODES[0], [
            ("tls", f"must be one of {list(model.TLS_MODES)}, got {value!r}")
        ]
    return str(value), []


def tls_domain_problem(tls: str, domain: str, fleet_domain: str) -> str:
    """The fleet CA is name-constrained to fleet_domain: other names need ACME."""
    if not is_fqdn(domain) or tls != "fleet-ca":
        return ""  # a malformed domain is reported once, as such
    if domain != fleet_domain and not domain.endswith("." + fleet_domain):
        return (
            f"{domain} is outside fleet_domain {fleet_domain}, the only names the fleet CA may "
            "sign: set tls: acme for it"
        )
    return ""


def acme(
    values: dict[str, Any], needed: bool, inventory: Path
) -> tuple[model.Acme | None, Problems]:
    """`acme_directory`, `acme_email` (required when a municipality has tls: acme),
    `acme_ca_bundle` (PEM the VMs trust for the ACME server's HTTPS; default: the system's)
    and `acme_roots` (PEM the issued certificates chain to; verify trusts it; default: the
    system's). Relative paths are relative to the inventory directory."""
    if not needed and not any(values.get(k) is not None for k in ACME_KEYS):
        return None, []
    problems: Problems = []
    why_needed = " (required: a municipality has tls: acme)" if needed else ""
    directory = values.get("acme_directory")
    if not _https_url(directory):
        why = f"must be the https:// URL of an ACME directory{why_needed}, got {directory!r}"
        problems.append(("acme_directory", why))
    email = values.get("acme_email")
    if not is_email(email):
        why = f"must be an e-mail address (user@domain){why_needed}, got {email!r}"
        problems.append(("acme_email", why))
    bundle = _pem_file("acme_ca_bundle", values.get("acme_ca_bundle"), inventory, problems)
    roots = _pem_file("acme_roots", values.get("acme_roots"), inventory, problems)
    if problems:
        return None, problems
    return model.Acme(str(directory), str(email), bundle, roots), []


def _https_url(value: Any) -> bool:
    if not isinstance(value, str) or has_control(value) or re.search(r"[\s\"'\\;{}$`]", value):
        return False
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        return False
    try:
        ipaddress.ip_address(parts.hostname)
        return True
    except ValueError:
        return is_fqdn(parts.hostname) or parts.hostname == "localhost"


def is_email(value: Any) -> bool:
    if not isinstance(value, str) or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(EMAIL_LOCAL_RE.fullmatch(local)) and is_fqdn(domain)


def _pem_file(fld: str, value: Any, inventory: Path, problems: Problems) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not value or has_control(value):
        problems.append((fld, f"must be the path of a PEM certificate file, got {value!r}"))
        return ""
    path = (inventory / value).resolve()
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append((fld, f"cannot read {path}: {exc}"))
        return ""
    if PEM_CERT not in text:
        problems.append((fld, f"{path} holds no PEM certificate"))
        return ""
    return str(path)

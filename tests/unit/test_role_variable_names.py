"""Role variables never share a name with an inventory field.

The inventory's fields are plain Ansible variables too (group_vars, host_vars), and they take
precedence over a role's defaults: a role default named like a field (`backup_remote` was
one) is silently replaced by the inventory's raw value on the VM. Found on real VMs; this
keeps it from coming back.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: how the inventory parser reads a field: hv.get("x"), gvars.get("x"), chk.shared(hv, s, "x", …)
FIELD_READS = re.compile(
    r"""(?:\b(?:hv|gvars|vars_|values)\.get\(\s*|\.shared\(\s*hv,\s*slug,\s*)"([a-z_][a-z0-9_]*)\""""
)


#: fields that ARE the role's variable on purpose (same value, validated by the CLI first)
DIRECT_OVERRIDES = {"portal_comment_ip_retention_days"}


def inventory_fields() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "cli" / "kallikratis").glob("*.py"):
        found |= set(FIELD_READS.findall(path.read_text(encoding="utf-8")))
    return found


def role_defaults() -> dict[str, str]:
    out = {}
    for path in sorted(ROOT.glob("roles/*/defaults/main.yml")):
        for name in yaml.safe_load(path.read_text(encoding="utf-8")) or {}:
            out[name] = str(path.relative_to(ROOT))
    return out


def test_the_field_scan_finds_the_inventory_fields() -> None:
    fields = inventory_fields()  # the scan itself must work, or the next test proves nothing
    assert {"backup_remote", "backup_keep", "tls", "contact", "display_name"} <= fields, fields


def test_no_role_default_is_named_like_an_inventory_field() -> None:
    fields = inventory_fields() - DIRECT_OVERRIDES
    clashes = {n: f for n, f in role_defaults().items() if n in fields}
    assert clashes == {}, f"role defaults overridden by same-named inventory fields: {clashes}"

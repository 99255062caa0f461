"""Inventory fields of the citizens' portal: the municipality's contact details and how long
commenters' IP addresses are kept.

Pure parsing like :mod:`kallikratis.opsfields`: each function takes the raw value and returns
the model value plus a list of (field, message) problems; :mod:`kallikratis.inventory` adds file
and entry. The values are shown on every page (HTML) and written into the portal's PHP plugin:
hostile until proven otherwise, so control characters and markup are refused here and the roles
still escape them for each sink.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kallikratis.checker import is_fqdn
from kallikratis.fleetfields import has_control

Problems = list[tuple[str, str]]

#: contact keys, in the order the contact page shows them
CONTACT_KEYS = ("address", "phone", "email", "hours", "data_controller")
CONTACT_TEXT_MAX = 200
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()./-]{3,24}$")
EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}$")
MARKUP_RE = re.compile(r"[<>{}\\`]")
DEFAULT_IP_RETENTION_DAYS = 30
MAX_IP_RETENTION_DAYS = 3650


def contact(value: Any) -> tuple[dict[str, str], Problems]:
    """`contact`: address, phone, e-mail, opening hours and the data controller named by the
    privacy policy (default: the municipality itself). Every key is optional."""
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        why = f"must be a mapping with some of {list(CONTACT_KEYS)}, got {value!r}"
        return {}, [("contact", why)]
    problems: Problems = []
    out: dict[str, str] = {}
    for key in value:
        if key not in CONTACT_KEYS:
            problems.append((f"contact.{key}", f"unknown key (known: {list(CONTACT_KEYS)})"))
    for key in CONTACT_KEYS:
        raw = value.get(key)
        if raw is None:
            continue
        if why := _contact_problem(key, raw):
            problems.append((f"contact.{key}", why))
        else:
            out[key] = raw.strip()
    if problems:
        return {}, problems
    return out, []


def _contact_problem(key: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        return f"must be a non-empty string, got {raw!r}"
    if has_control(raw) or MARKUP_RE.search(raw):
        return f"must be plain text on one line (no control characters, < > {{ }} \\ `): {raw!r}"
    if len(raw) > CONTACT_TEXT_MAX:
        return f"must be at most {CONTACT_TEXT_MAX} characters, got {len(raw)}"
    if key == "phone" and not PHONE_RE.fullmatch(raw):
        return f"must be a telephone number like '+30 2897 340000', got {raw!r}"
    if key == "email" and not is_email(raw):
        return f"must be an e-mail address (user@domain), got {raw!r}"
    return ""


def is_email(value: str) -> bool:
    if value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(EMAIL_LOCAL_RE.fullmatch(local)) and is_fqdn(domain)


def comment_ip_retention_days(value: Any) -> tuple[int, Problems]:
    """`portal_comment_ip_retention_days`: commenters' IP addresses are erased after this many
    days (GDPR storage limitation; the privacy policy states the number)."""
    if value is None:
        return DEFAULT_IP_RETENTION_DAYS, []
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3650:
        why = f"must be a whole number of days from 1 to {MAX_IP_RETENTION_DAYS}, got {value!r}"
        return DEFAULT_IP_RETENTION_DAYS, [("portal_comment_ip_retention_days", why)]
    return value, []


LOGO_NAMES = ("logo.svg", "logo.png", "logo.jpg")
LOGO_MAX_BYTES = 512 * 1024
#: what makes an SVG active content when opened by itself on the portal's origin
SVG_ACTIVE = re.compile(r"<script|<foreignobject|javascript:|\son[a-z]+\s*=|<!entity", re.I)


def logo_file(host_dir: Path) -> tuple[str, Problems]:
    """An optional logo in host_vars/<name>/ (logo.svg, logo.png or logo.jpg, at most 512 KiB):
    its path, or "" for none. Problems name the file itself as the field "logo"."""
    found = [host_dir / n for n in LOGO_NAMES if (host_dir / n).is_file()]
    if not found:
        return "", []
    if len(found) > 1:
        return "", [("logo", f"more than one logo file: {', '.join(str(p) for p in found)}")]
    path = found[0]
    data = path.read_bytes()
    if len(data) > LOGO_MAX_BYTES:
        return "", [("logo", f"{path} is {len(data)} bytes, more than {LOGO_MAX_BYTES}")]
    kind = path.suffix
    if kind == ".png" and not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "", [("logo", f"{path} is not a PNG image")]
    if kind == ".jpg" and not data.startswith(b"\xff\xd8\xff"):
        return "", [("logo", f"{path} is not a JPEG image")]
    if kind == ".svg":
        text = data.decode("utf-8", errors="replace")
        if "<svg" not in text:
            return "", [("logo", f"{path} is not an SVG image")]
        if SVG_ACTIVE.search(text):
            why = f"{path} has scripts, event handlers, foreign objects or entities: refused"
            return "", [("logo", why)]
    return str(path.resolve()), []

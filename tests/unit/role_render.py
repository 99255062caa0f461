"""Render a role's template with Ansible's own templating and the role's defaults (as a play
would, with the vars plugin's values given by the test)."""

from __future__ import annotations

from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from kallikratis import paths

ROLES = paths.PROJECT_ROOT / "roles"

#: what the vars plugin hands the control VM (issue-10 contract), for the monitoring role
CONTROL_VARS: dict[str, Any] = {
    "ansible_managed": "Ansible managed (unit test)",
    "inventory_hostname": "control",
    "kallikratis_fleet": "crete",
    "kallikratis_slug": "control",
    "kallikratis_domain": "control.crete.kallikratis.test",
    "kallikratis_ip": "192.168.150.5",
    "kallikratis_modules": [],
    "kallikratis_mgmt_networks": ["192.168.150.1/32", "192.168.150.5/32"],
    "kallikratis_central_roles": ["control"],
    "kallikratis_monitoring_targets": [
        {
            "slug": "hersonissos",
            "display_name": "Δήμος Χερσονήσου",
            "domain": "hersonissos.crete.kallikratis.test",
            "ip": "192.168.150.10",
            "modules": ["portal", "opendata", "education"],
        },
        {
            "slug": "minoa-pediada",
            "display_name": "Δήμος Μινώα Πεδιάδας",
            "domain": "minoa-pediada.crete.kallikratis.test",
            "ip": "192.168.150.11",
            "modules": ["opendata"],
        },
    ],
    "kallikratis_alert_email": "",
    "kallikratis_alert_webhook_url": "",
    "kallikratis_alert_smtp_smarthost": "",
    "vault_monitoring_report_password": "unit-test-dashboard-password",
    "kallikratis_tls_cert_file": "/nonexistent/control.crt",
    "kallikratis_tls_key_file": "/nonexistent/control.key",
    "kallikratis_tls_ca_file": "/nonexistent/ca.crt",
    "kallikratis_admin_allow": ["192.168.150.0/24"],
    "kallikratis_maintenance_flag": "/etc/kallikratis/maintenance",
}


def trusted(value: Any) -> Any:
    """Role defaults as Ansible loads them: their templates are trusted."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


def role_defaults(role: str) -> dict[str, Any]:
    loader = DataLoader()
    return dict(trusted(loader.load_from_file(str(ROLES / role / "defaults" / "main.yml"))))


def render(role: str, template: str, variables: dict[str, Any], **extra: Any) -> str:
    """ROLE's templates/TEMPLATE with its defaults, VARIABLES and EXTRA (highest precedence)."""
    loader = DataLoader()
    values = role_defaults(role) | variables | trusted(extra)
    text = (ROLES / role / "templates" / template).read_text(encoding="utf-8")
    return str(
        Templar(loader=loader, variables=values).template(
            trust_as_template(text), escape_backslashes=False
        )
    )

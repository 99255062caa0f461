"""The variables Ansible sees for one municipality (through plugins/vars/kallikratis.py).

Computed from the model so that plain ansible-playbook and `kallikratis deploy` agree.
No secret values here: only paths of vault-encrypted files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kallikratis import model, ssh
from kallikratis.paths import FleetState, StateDir

#: paths on the VM that more than one role (and the controller) use; the roles see them as
#: kallikratis_nginx_snippet_dir, kallikratis_maintenance_flag and kallikratis_wheelhouse
VM_NGINX_SNIPPET_DIR = "/etc/nginx/kallikratis.d"
VM_MAINTENANCE_FLAG = "/etc/kallikratis/maintenance"
VM_WHEELHOUSE = "/opt/kallikratis/wheels"


def municipality_vars(fleet: model.Fleet, m: model.Municipality, state_dir: Path) -> dict[str, Any]:
    state = StateDir(state_dir)
    mine = state.fleet(fleet.name)
    ssh_args = ssh.option_args(ssh.pinned_options(mine.known_hosts))
    if state.previous_client_key.exists():  # a rotation is pending: offer the old key too
        ssh_args += ssh.option_args([("IdentityFile", str(state.previous_client_key))])
    return {
        "ansible_host": str(m.ip),
        "ansible_user": fleet.admin_user,
        "ansible_become": True,
        "ansible_ssh_private_key_file": str(state.client_key),
        "ansible_ssh_common_args": " ".join(ssh_args),
        "kallikratis_fleet": fleet.name,
        "kallikratis_slug": m.slug,
        "kallikratis_display_name": m.display_name,
        "kallikratis_domain": m.domain,
        "kallikratis_modules": list(m.modules),
        "kallikratis_language": m.language,
        "kallikratis_branding": {"colour": m.branding_colour, "logo": m.branding_logo},
        "kallikratis_datasets": list(m.datasets),
        "kallikratis_ip": str(m.ip),
        "kallikratis_mgmt_networks": [str(n) for n in fleet.management_sources],
        "kallikratis_tls_ca_file": str(mine.ca_cert),
        "kallikratis_tls_cert_file": str(mine.tls_cert(m.slug)),
        "kallikratis_tls_key_file": str(mine.tls_key(m.slug)),
        "kallikratis_data_dir": str(fleet.inventory / "host_vars" / m.slug / "data"),
        "kallikratis_nginx_snippet_dir": VM_NGINX_SNIPPET_DIR,
        "kallikratis_maintenance_flag": VM_MAINTENANCE_FLAG,
        "kallikratis_wheelhouse": VM_WHEELHOUSE,
        "kallikratis_admin_allow": list(fleet.admin_allow),
        "kallikratis_tls": m.tls,
        "kallikratis_contact": dict(m.contact),
        "kallikratis_comment_ip_retention_days": m.comment_ip_retention_days,
        "kallikratis_logo_file": m.logo_file,
        "kallikratis_acme": acme_vars(fleet.acme) if m.tls == "acme" else {},
        "kallikratis_apt_sources": [
            {k: list(v) if isinstance(v, tuple) else v for k, v in src.items()}
            for src in m.apt_sources
        ],
        "kallikratis_central_roles": list(m.central_roles),
        **(central_vars(fleet, m) if m.is_central else tenant_vars(fleet)),
        **backup_vars(fleet, m, mine),
    }


def tenant_vars(fleet: model.Fleet) -> dict[str, Any]:
    """What a municipality's plays need to know of the center: the control VMs (tasks
    delegated to them register the municipality with the monitoring) and the regional hub
    its portal names as the network it belongs to (schema.org memberOf; {} without a hub)."""
    return {
        "kallikratis_control_hosts": [
            c.slug for c in fleet.central if "control" in c.central_roles
        ],
        "kallikratis_hub": hub_link(fleet),
    }


def hub_link(fleet: model.Fleet) -> dict[str, str]:
    """The fleet's interoperability hub as the portals link to it: its name and public URL."""
    hub = fleet.hub
    if hub is None:
        return {}
    return {"name": hub.display_name, "url": f"https://{hub.domain}/"}


def central_vars(fleet: model.Fleet, m: model.Municipality) -> dict[str, Any]:
    """A central VM's view of the fleet: on `control`, what to monitor and where alerts go;
    on `hub`, which portals to harvest."""
    out: dict[str, Any] = {}
    if "control" in m.central_roles:
        out |= {
            "kallikratis_monitoring_targets": [monitoring_target(t) for t in fleet.tenants],
            "kallikratis_alert_email": fleet.alerts.email,
            "kallikratis_alert_webhook_url": fleet.alerts.webhook_url,
            "kallikratis_alert_smtp_smarthost": fleet.alerts.smtp_smarthost,
        }
    if "hub" in m.central_roles:
        out["kallikratis_hub_portals"] = [monitoring_target(t) for t in fleet.tenants]
    return out


#: the backup store on control: borg's home, one repository per municipality under it
BACKUP_STORE_DIR = "/srv/backups"
BACKUP_STORE_USER = "borg"


def backup_repository(control: model.Municipality, slug: str) -> str:
    """A municipality's borg repository on control, as borgmatic on its VM names it."""
    return f"ssh://{BACKUP_STORE_USER}@{control.ip}/./{slug}"


def backup_vars(fleet: model.Fleet, m: model.Municipality, mine: FleetState) -> dict[str, Any]:
    """Backups (roles/backup on a municipality, roles/backupstore on control).

    A municipality learns where its repository is and control's pinned host key (the
    controller's known_hosts line of control: the VM never trusts on first use); control
    learns every municipality's address and backup public key (the private half is in the
    municipality's vault.yml; the CLI writes the public half next to known_hosts).
    """
    control = fleet.control
    if m.is_central:
        if "control" not in m.central_roles:
            return {}
        clients = [
            {
                "slug": t.slug,
                "ip": str(t.ip),
                "public_key": _read_line(mine.backup_public_key(t.slug)),
            }
            for t in fleet.tenants
        ]
        return {
            "kallikratis_backup_clients": clients,
            "kallikratis_backup_store_dir": BACKUP_STORE_DIR,
            # control's own volume for the repositories, found by its serial ("" = none)
            "kallikratis_backup_volume_serial": model.DATA_SERIAL if m.backup_volume_gib else "",
            "kallikratis_backup_retention_after_destroy": fleet.backup_retention_after_destroy,
        }
    if control is None:
        return {"kallikratis_backup_store": {}}
    return {
        "kallikratis_backup_store": {
            "slug": control.slug,
            "host": str(control.ip),
            "user": BACKUP_STORE_USER,
            "repository": backup_repository(control, m.slug),
            "known_hosts": known_host_lines(mine.known_hosts, control.slug),
            "remote": remote_vars(m),
        }
    }


#: the off-site copy's label in borgmatic's configuration and in outcomes
REMOTE_LABEL = "offsite"


def remote_vars(m: model.Municipality) -> dict[str, Any]:
    """The off-site copy (``backup_remote``) as roles/backup needs it; {} = none."""
    r = m.backup_remote
    if r is None:
        return {}
    return {
        "label": REMOTE_LABEL,
        "host": r.host.strip("[]"),
        "port": r.port,
        "repository": r.repository(m.slug),
        "known_hosts": [r.known_hosts_line()],
    }


def known_host_lines(known_hosts: Path, slug: str) -> list[str]:
    """The fleet known_hosts lines of *slug* ("address type key slug"); [] before its `up`."""
    try:
        text = known_hosts.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == slug:
            out.append(" ".join(fields[:3]))
    return out


def _read_line(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def monitoring_target(m: model.Municipality) -> dict[str, Any]:
    """One municipality as the monitoring sees it (the file_sd target and the probes)."""
    return {
        "slug": m.slug,
        "display_name": m.display_name,
        "domain": m.domain,
        "ip": str(m.ip),
        "modules": list(m.modules),
    }


def acme_vars(acme: model.Acme | None) -> dict[str, str]:
    """The ACME account for certbot on the VM (the CA bundle as a controller path)."""
    if acme is None:
        return {}
    return {"directory": acme.directory, "email": acme.email, "ca_bundle_file": acme.ca_bundle}

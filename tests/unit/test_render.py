"""Every rendered document: golden files, the real validators, and exact round trips."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kallikratis import model, render, vmresources
from kallikratis.documents import VmKeys, compose
from kallikratis.hypervisor.libvirt_backend import dhcp_host_xml
from support import (
    GREEK,
    HOSTILE_NAME,
    InventoryCopy,
    check_golden,
    fixed_client_public_key,
    fixed_host_key,
)

IMAGE_VERSION = "0123456789ab"
GOLDEN_VOLUME = f"/var/lib/libvirt/images/kallikratis/golden-debian13-{IMAGE_VERSION}.qcow2"
NS = {"kk": model.METADATA_NS}
NEWLINE_NAME = "Δήμος Χερσονήσου\nΓραφείο Δημάρχου"
SYSTEM_PYTHON = "/usr/bin/python3"  # cloud-init is a Debian package of the system Python
XML_DOCS = {  # document -> virt-xml-validate schema
    "domain.xml": "domain",
    "network.xml": "network",
    "pool.xml": "storagepool",
    "overlay.xml": "storagevol",
}


@dataclass(frozen=True)
class Rendered:
    fleet: model.Fleet
    vm: model.Municipality
    docs: dict[str, str]  # golden file name -> text


def _render_all(
    inv: InventoryCopy, state_dir: Path, slug: str, display_name: str | None = None
) -> Rendered:
    fleet = inv.load()
    vm = fleet.get(slug)
    if display_name is not None:  # a value validation refuses: the templates escape it anyway
        vm = dataclasses.replace(vm, display_name=display_name)
    docs = compose(fleet, vm, VmKeys(fixed_host_key(), fixed_client_public_key()), IMAGE_VERSION)
    return Rendered(
        fleet,
        vm,
        {
            "domain.xml": docs.domain,
            "user-data": docs.seed.user_data,
            "meta-data": docs.seed.meta_data,
            "network-config": docs.seed.network_config,
            "network.xml": render.render(
                "network.xml.j2", net=fleet.network, fleet=fleet, hosts=list(fleet.municipalities)
            ),
            "pool.xml": render.render("pool.xml.j2", pool=fleet.pool),
            "overlay.xml": render.render(
                "overlay.xml.j2",
                name=vm.disk_volume,
                capacity_gib=vm.profile.disk_gib,
                backing_path=GOLDEN_VOLUME,
            ),
            "dhcp-host.xml": dhcp_host_xml(vmresources.reservation(vm)),
        },
    )


def _setup(inv: InventoryCopy, case: str) -> str:
    if case == "hostile":
        inv.add_host("hostile", display_name=HOSTILE_NAME, profile="medium", modules=["portal"])
        inv.set_fleet(admin_ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdmin admin@crete"])
        return "hostile"
    return "hersonissos"


@pytest.fixture(params=["hersonissos", "hostile"])
def rendered(request: pytest.FixtureRequest, inv: InventoryCopy, state_dir: Path) -> Rendered:
    return _render_all(inv, state_dir, _setup(inv, request.param))


DOC_NAMES = [
    "domain.xml",
    "user-data",
    "meta-data",
    "network-config",
    "network.xml",
    "pool.xml",
    "overlay.xml",
    "dhcp-host.xml",
]


@pytest.mark.parametrize("doc", DOC_NAMES)
def test_document_matches_golden_file(rendered: Rendered, doc: str) -> None:
    check_golden(f"{rendered.vm.slug}/{doc}", rendered.docs[doc])


def test_documents_are_deterministic(inv: InventoryCopy, state_dir: Path) -> None:
    first = _render_all(inv, state_dir, "hersonissos").docs
    assert _render_all(inv, state_dir, "hersonissos").docs == first


# --------------------------------------------------------------------------- real validators


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("doc", list(XML_DOCS))
def test_libvirt_xml_passes_virt_xml_validate(rendered: Rendered, tmp_path: Path, doc: str) -> None:
    path = _write(tmp_path, doc, rendered.docs[doc])
    proc = _run(["virt-xml-validate", str(path), XML_DOCS[doc]])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dhcp_host_is_valid_inside_a_network(rendered: Rendered, tmp_path: Path) -> None:
    host = ET.fromstring(rendered.docs["dhcp-host.xml"])
    assert host.attrib == {
        "mac": rendered.vm.mac,
        "name": rendered.vm.slug,
        "ip": str(rendered.vm.ip),
    }
    network = ET.fromstring(rendered.docs["network.xml"])
    dhcp = network.find("./ip/dhcp")
    assert dhcp is not None
    assert host.attrib in [h.attrib for h in dhcp.findall("host")]
    for old in dhcp.findall("host"):
        dhcp.remove(old)
    dhcp.append(host)
    path = _write(tmp_path, "net.xml", ET.tostring(network, encoding="unicode"))
    proc = _run(["virt-xml-validate", str(path), "network"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_virt_xml_validate_rejects_a_broken_document(tmp_path: Path) -> None:
    """The validator is really consulted: a domain without <name> fails."""
    path = _write(tmp_path, "bad.xml", '<domain type="kvm"><memory>1</memory></domain>')
    assert _run(["virt-xml-validate", str(path), "domain"]).returncode != 0


def _cloud_init_schema(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = _write(tmp_path, "user-data", text)
    return _run(["cloud-init", "schema", "--config-file", str(path)])


def test_user_data_passes_cloud_init_schema(rendered: Rendered, tmp_path: Path) -> None:
    proc = _cloud_init_schema(tmp_path, rendered.docs["user-data"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


def test_cloud_init_schema_rejects_a_broken_user_data(tmp_path: Path) -> None:
    path = _write(tmp_path, "user-data", "#cloud-config\nusers: 5\n")
    assert _run(["cloud-init", "schema", "--config-file", str(path)]).returncode != 0


_PARSE_NETWORK = """
import json, sys, yaml
from cloudinit.net.network_state import parse_net_config_data
ns = parse_net_config_data(yaml.safe_load(open(sys.argv[1])))
print(json.dumps({"interfaces": list(ns.iter_interfaces()), "dns": ns.dns_nameservers}))
"""


def test_network_config_parses_with_cloud_init(rendered: Rendered, tmp_path: Path) -> None:
    """cloud-init 22.4 has no network-config schema (`--schema-type` came in 23.x): parse the
    document with cloud-init's own network-state parser, the code that renders it on boot."""
    help_text = _run(["cloud-init", "schema", "--help"]).stdout
    path = _write(tmp_path, "network-config", rendered.docs["network-config"])
    if "--schema-type" in help_text:
        proc = _run(
            ["cloud-init", "schema", "--schema-type", "network-config", "--config-file", str(path)]
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(SYSTEM_PYTHON).exists() and shutil.which("cloud-init")
    proc = _run([SYSTEM_PYTHON, "-c", _PARSE_NETWORK, str(path)])
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    [iface] = state["interfaces"]
    [subnet] = iface["subnets"]
    net = rendered.fleet.network
    assert iface["mac_address"] == rendered.vm.mac
    assert (subnet["type"], subnet["address"], subnet["prefix"]) == (
        "static",
        str(rendered.vm.ip),
        net.cidr.prefixlen,
    )
    assert [(r["network"], r["prefix"], r["gateway"]) for r in subnet["routes"]] == [
        ("0.0.0.0", 0, str(net.gateway))
    ]
    assert state["dns"] == list(net.dns)


# --------------------------------------------------------------------------- round trips


def test_user_data_values_and_keys_round_trip(rendered: Rendered) -> None:
    text = rendered.docs["user-data"]
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    vm, fleet = rendered.vm, rendered.fleet
    host = fixed_host_key()
    assert data["hostname"] == vm.slug
    assert data["fqdn"] == vm.domain
    assert data["ssh_keys"] == {
        "ed25519_private": host.private_openssh,
        "ed25519_public": host.public_openssh,
    }
    [user] = data["users"]
    assert user["name"] == fleet.admin_user
    assert user["ssh_authorized_keys"] == [fixed_client_public_key(), *fleet.admin_ssh_keys]
    assert data["ssh_pwauth"] is False and data["disable_root"] is True


def test_meta_data_round_trips(rendered: Rendered) -> None:
    data = yaml.safe_load(rendered.docs["meta-data"])
    assert data["local-hostname"] == rendered.vm.slug
    assert data["instance-id"].startswith(f"{rendered.vm.vm_name}-")


def _domain_metadata(xml: str) -> tuple[ET.Element, ET.Element]:
    root = ET.fromstring(xml)
    meta = root.find("./metadata/kk:municipality", NS)
    assert meta is not None
    return root, meta


def test_domain_title_and_metadata_round_trip(rendered: Rendered) -> None:
    root, meta = _domain_metadata(rendered.docs["domain.xml"])
    vm = rendered.vm
    assert root.findtext("name") == vm.vm_name
    assert root.findtext("title") == vm.display_name
    assert meta.findtext("kk:display-name", namespaces=NS) == vm.display_name
    assert meta.findtext("kk:slug", namespaces=NS) == vm.slug
    assert meta.findtext("kk:fleet", namespaces=NS) == rendered.fleet.name
    assert meta.findtext("kk:image", namespaces=NS) == IMAGE_VERSION
    assert meta.findtext("kk:host-key", namespaces=NS) == fixed_host_key().public_openssh
    spec = json.loads(meta.findtext("kk:spec", namespaces=NS) or "")
    assert spec == model.vm_spec(rendered.fleet, vm, "")
    assert meta.findtext("kk:spec-hash", namespaces=NS) == model.spec_hash(spec)
    assert root.find("./devices/interface/mac").get("address") == vm.mac


def test_display_name_is_escaped_not_injected(rendered: Rendered) -> None:
    xml = rendered.docs["domain.xml"]
    if rendered.vm.slug == "hersonissos":
        assert rendered.vm.display_name == GREEK["hersonissos"]
        assert xml.count(GREEK["hersonissos"]) == 3  # title, display-name, spec: verbatim
    else:
        assert rendered.vm.display_name == HOSTILE_NAME
        assert HOSTILE_NAME not in xml and "<b>" not in xml and "]]>" not in xml
        assert xml.count("&lt;b&gt;x&lt;/b&gt; ]]&gt;") == 3  # title, display-name, spec


def test_no_private_key_outside_user_data(rendered: Rendered) -> None:
    for name, text in rendered.docs.items():
        assert ("PRIVATE KEY" in text) == (name == "user-data"), name


# --------------------------------------------------------------------------- a newline in the name


@pytest.fixture
def newline_docs(inv: InventoryCopy, state_dir: Path) -> Rendered:
    """A newline in the name is refused by validation; should one get past it, the documents
    still keep it inside its value."""
    return _render_all(inv, state_dir, _setup(inv, "newline"), NEWLINE_NAME)


def test_newline_display_name_round_trips_in_metadata_and_user_data(
    newline_docs: Rendered, tmp_path: Path
) -> None:
    _, meta = _domain_metadata(newline_docs.docs["domain.xml"])
    assert meta.findtext("kk:display-name", namespaces=NS) == NEWLINE_NAME
    assert yaml.safe_load(newline_docs.docs["user-data"])["hostname"] == "hersonissos"
    assert _cloud_init_schema(tmp_path, newline_docs.docs["user-data"]).returncode == 0


def test_newline_display_name_gives_a_valid_domain_xml(
    newline_docs: Rendered, tmp_path: Path
) -> None:
    path = _write(tmp_path, "domain.xml", newline_docs.docs["domain.xml"])
    proc = _run(["virt-xml-validate", str(path), "domain"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_retired_seed_and_domain_pass_the_validators(rendered: Rendered, tmp_path: Path) -> None:
    """The seed a VM keeps after its first boot: cloud-init's schema, libvirt's RNG schema."""
    keys = VmKeys(fixed_host_key(), fixed_client_public_key())
    docs = compose(rendered.fleet, rendered.vm, keys, IMAGE_VERSION, retired=True)
    proc = _cloud_init_schema(tmp_path, docs.seed.user_data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in docs.seed.user_data
    path = tmp_path / "domain.xml"
    path.write_text(docs.domain)
    done = _run(["virt-xml-validate", str(path), "domain"])
    assert done.returncode == 0, done.stdout + done.stderr

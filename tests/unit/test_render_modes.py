"""The network modes other than nat (route, isolated, bridge): golden documents, the real
virt-xml-validate, and the golden-file guard under CI."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kallikratis import render
from kallikratis.documents import VmKeys, compose
from support import (
    GOLDEN,
    UPDATE_GOLDEN_ENV,
    InventoryCopy,
    check_golden,
    fixed_client_public_key,
    fixed_host_key,
)

IMAGE_VERSION = "0123456789ab"
MODES = ("route", "isolated", "bridge")


def _documents(inv: InventoryCopy, state_dir: Path, mode: str) -> dict[str, str]:
    inv.edit(inv.fleet_vars, lambda d: d["fleet_network"].update(mode=mode))
    if mode == "bridge":
        inv.edit(
            inv.fleet_vars,
            lambda d: d["fleet_network"].update(bridge="br-dc0", controller="10.42.0.250"),
        )
    fleet = inv.load()
    assert fleet.network.mode == mode
    vm = fleet.get("hersonissos")
    keys = VmKeys(fixed_host_key(), fixed_client_public_key())
    docs = {"domain.xml": compose(fleet, vm, keys, IMAGE_VERSION).domain}
    if fleet.network.managed:
        docs["network.xml"] = render.render(
            "network.xml.j2", net=fleet.network, fleet=fleet, hosts=list(fleet.municipalities)
        )
    return docs


@pytest.fixture(params=MODES)
def mode_docs(
    request: pytest.FixtureRequest, inv: InventoryCopy, state_dir: Path
) -> tuple[str, dict[str, str]]:
    return request.param, _documents(inv, state_dir, request.param)


def test_mode_documents_match_golden_files(mode_docs: tuple[str, dict[str, str]]) -> None:
    mode, docs = mode_docs
    assert sorted(docs) == (["domain.xml"] if mode == "bridge" else ["domain.xml", "network.xml"])
    for name, text in docs.items():
        check_golden(f"modes/{mode}/{name}", text)


@pytest.mark.parametrize("doc", ["domain.xml", "network.xml"])
def test_mode_documents_pass_virt_xml_validate(
    mode_docs: tuple[str, dict[str, str]], tmp_path: Path, doc: str
) -> None:
    mode, docs = mode_docs
    if doc not in docs:
        assert mode == "bridge"  # an existing bridge: libvirt manages no network
        return
    path = tmp_path / doc
    path.write_text(docs[doc], encoding="utf-8")
    schema = doc.removesuffix(".xml")
    proc = subprocess.run(
        ["virt-xml-validate", str(path), schema],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_mode_wires_the_vm_as_it_should(mode_docs: tuple[str, dict[str, str]]) -> None:
    mode, docs = mode_docs
    iface = ET.fromstring(docs["domain.xml"]).find("./devices/interface")
    assert iface is not None
    source = iface.find("source")
    assert source is not None
    if mode == "bridge":
        assert iface.get("type") == "bridge" and source.attrib == {"bridge": "br-dc0"}
        return
    assert iface.get("type") == "network" and source.attrib == {"network": "kallikratis-crete"}
    forward = ET.fromstring(docs["network.xml"]).find("forward")
    if mode == "route":
        assert forward is not None and forward.attrib == {"mode": "route"}
    else:
        assert forward is None  # isolated: no way out of the network


# --------------------------------------------------------------------------- the golden guard


def test_updating_golden_files_is_refused_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "hersonissos/pool.xml"
    before = (GOLDEN / name).read_bytes()
    monkeypatch.setenv(UPDATE_GOLDEN_ENV, "1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="refused under CI"):
        check_golden(name, "<pool>not what the golden file says</pool>\n")
    assert (GOLDEN / name).read_bytes() == before


def test_under_ci_golden_files_are_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "hersonissos/pool.xml"
    monkeypatch.delenv(UPDATE_GOLDEN_ENV, raising=False)
    monkeypatch.setenv("CI", "true")
    check_golden(name, (GOLDEN / name).read_text(encoding="utf-8"))
    with pytest.raises(AssertionError, match="differs from its golden file"):
        check_golden(name, "<pool/>\n")

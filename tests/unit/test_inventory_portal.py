"""The portal's inventory fields: contact details and the comment IP retention.

Good values reach the model and the Ansible variables; every bad value is reported with file,
entry and field, once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kallikratis import inventory, stackvars
from kallikratis.errors import InventoryError
from kallikratis.portalfields import LOGO_NAMES
from support import CRETE, FLEET, HERSO_VARS, HOSTS, Bad, InventoryCopy, assert_one_problem

CONTACT = {
    "address": "Ελ. Βενιζέλου 1, 70014 Γούβες",
    "phone": "+30 2897 340000",
    "email": "info@hersonissos.gr",
    "hours": "Δευτέρα–Παρασκευή 08:00–15:00",
    "data_controller": 'Δήμος "Χερσονήσου" & Σία',
}


def test_shipped_fleet_has_contact_for_hersonissos_only() -> None:
    fleet = inventory.load(CRETE)
    herso = fleet.get("hersonissos")
    assert herso.contact["phone"] == "+30 2897 340000"
    assert fleet.get("minoa-pediada").contact == {}
    assert all(m.comment_ip_retention_days == 30 for m in fleet.municipalities)


def test_contact_and_retention_reach_ansible(inv: InventoryCopy, tmp_path: Path) -> None:
    inv.set_fleet(portal_comment_ip_retention_days=7)
    inv.set_host("hersonissos", contact=CONTACT)
    fleet = inv.load()
    got = stackvars.municipality_vars(fleet, fleet.get("hersonissos"), tmp_path)
    assert got["kallikratis_contact"] == CONTACT
    assert got["kallikratis_comment_ip_retention_days"] == 7
    other = stackvars.municipality_vars(fleet, fleet.get("minoa-pediada"), tmp_path)
    assert other["kallikratis_contact"] == {}


BAD: dict[str, Bad] = {
    "contact-not-a-mapping": Bad(
        lambda i: i.set_host("hersonissos", contact="Γούβες"),
        HOSTS,
        "hersonissos",
        "contact",
        "must be a mapping",
    ),
    "contact-unknown-key": Bad(
        lambda i: i.set_host("hersonissos", contact={"fax": "123"}),
        HOSTS,
        "hersonissos",
        "contact.fax",
        "unknown key",
    ),
    "contact-phone-letters": Bad(
        lambda i: i.set_host("hersonissos", contact={"phone": "call us"}),
        HOSTS,
        "hersonissos",
        "contact.phone",
        "telephone number",
    ),
    "contact-email-no-domain": Bad(
        lambda i: i.set_host_var_file("hersonissos", contact={"email": "info@"}),
        HERSO_VARS,
        "hersonissos",
        "contact.email",
        "e-mail address",
    ),
    "contact-address-markup": Bad(
        lambda i: i.set_host("hersonissos", contact={"address": "<script>x</script>"}),
        HOSTS,
        "hersonissos",
        "contact.address",
        "plain text",
    ),
    "contact-hours-php-escape": Bad(
        lambda i: i.set_host("hersonissos", contact={"hours": "8-15\\'; system('id'); //"}),
        HOSTS,
        "hersonissos",
        "contact.hours",
        "plain text",
    ),
    "contact-hours-too-long": Bad(
        lambda i: i.set_host("hersonissos", contact={"hours": "α" * 201}),
        HOSTS,
        "hersonissos",
        "contact.hours",
        "at most 200",
    ),
    "contact-address-empty": Bad(
        lambda i: i.set_host("hersonissos", contact={"address": " "}),
        HOSTS,
        "hersonissos",
        "contact.address",
        "non-empty",
    ),
    "retention-zero": Bad(
        lambda i: i.set_host("hersonissos", portal_comment_ip_retention_days=0),
        HOSTS,
        "hersonissos",
        "portal_comment_ip_retention_days",
        "from 1 to 3650",
    ),
    "retention-string-in-group-vars": Bad(
        lambda i: i.set_fleet(portal_comment_ip_retention_days="30d"),
        FLEET,
        "all",
        "portal_comment_ip_retention_days",
        "'30d'",
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=list(BAD))
def test_bad_portal_field_is_reported_with_file_entry_field(inv: InventoryCopy, case: Bad) -> None:
    case.mutate(inv)
    with pytest.raises(InventoryError) as exc:
        inv.load()
    problem = assert_one_problem(exc.value, inv.root, case)
    assert case.text in problem.message


LOGO_ORDER = list(LOGO_NAMES)
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="30"/></svg>'


def test_a_logo_file_reaches_ansible(inv: InventoryCopy, tmp_path: Path) -> None:
    logo = inv.root / "host_vars" / "hersonissos" / "logo.svg"
    logo.write_text(SVG)
    fleet = inv.load()
    assert fleet.get("hersonissos").logo_file == str(logo.resolve())
    assert fleet.get("minoa-pediada").logo_file == ""
    got = stackvars.municipality_vars(fleet, fleet.get("hersonissos"), tmp_path)
    assert got["kallikratis_logo_file"] == str(logo.resolve())


@pytest.mark.parametrize(
    ("names", "content", "text"),
    [
        (["logo.svg"], SVG.replace("<circle", "<script>alert(1)</script><circle"), "scripts"),
        (["logo.svg"], SVG.replace("<circle", '<circle onload="alert(1)"'), "event handlers"),
        (["logo.svg"], "<html>not an image</html>", "not an SVG"),
        (["logo.png"], "GIF89a", "not a PNG"),
        (["logo.jpg"], "\x89PNG", "not a JPEG"),
        (["logo.png", "logo.svg"], SVG, "more than one logo"),
        (["logo.svg"], SVG + " " * 600_000, "more than 524288"),
    ],
    ids=["svg-script", "svg-handler", "not-svg", "not-png", "not-jpeg", "two-logos", "too-big"],
)
def test_a_bad_logo_file_is_reported_with_its_path(
    inv: InventoryCopy, names: list[str], content: str, text: str
) -> None:
    host_dir = inv.root / "host_vars" / "hersonissos"
    for name in names:
        (host_dir / name).write_text(content, encoding="latin-1")
    with pytest.raises(InventoryError) as exc:
        inv.load()
    [problem] = exc.value.problems
    assert problem.file == str(host_dir / sorted(names, key=LOGO_ORDER.index)[0])
    assert (problem.entry, problem.field) == ("hersonissos", "logo")
    assert text in problem.message

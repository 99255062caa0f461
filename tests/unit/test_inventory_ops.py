"""The operations fields of the inventory: watch_services, patch_keep_snapshots, apt_sources.

Good values reach the model (and, for apt_sources, the Ansible variables); every bad value is
reported with file, entry and field, once, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kallikratis import inventory, stackvars
from kallikratis.errors import InventoryError
from support import (
    CRETE,
    FLEET,
    HERSO_VARS,
    HOSTS,
    SLUGS,
    Bad,
    InventoryCopy,
    assert_one_problem,
)

ARMORED = """-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEawjX+BYJKwYBBAHaRw8BAQdA6zYU5W3ASHlnU94gYWCM4odpUnv0TcjM0YUP
yl6ktKC0LEthbGxpa3JhdGlzIHRlc3QgcmVwbyA8dGVzdEBleGFtcGxlLmludmFs
=/g75
-----END PGP PUBLIC KEY BLOCK-----
"""

FLAT_REPO = {
    "name": "kallikratis-updates",
    "uris": ["http://10.42.0.1:8080/flat/"],
    "suites": ["./"],
    "components": [],
    "signed_by": ARMORED,
}

# --------------------------------------------------------------------------- good values


def test_shipped_fleet_has_debian_sources_and_defaults() -> None:
    fleet = inventory.load(CRETE)
    for m in fleet.municipalities:
        assert m.watch_services == ()
        assert m.patch_keep_snapshots == 1
        assert [s["name"] for s in m.apt_sources] == ["debian", "debian-security"]
    debian, security = fleet.get("hersonissos").apt_sources
    assert debian["uris"] == ("http://deb.debian.org/debian",)
    assert debian["suites"] == ("trixie", "trixie-updates")
    assert security["suites"] == ("trixie-security",)
    assert all(s["signed_by"].startswith("/usr/share/keyrings/") for s in (debian, security))


def test_values_from_group_vars_and_host_overrides(inv: InventoryCopy) -> None:
    inv.set_fleet(watch_services=["kallikratis-probe.service"], patch_keep_snapshots=3)
    inv.set_host_var_file(
        "hersonissos", watch_services=["getty@tty1.service", "a-b_c.d:e.timer"], apt_sources=[]
    )
    inv.set_host("minoa-pediada", patch_keep_snapshots=1, apt_sources=[FLAT_REPO])
    fleet = inv.load()
    herso, minoa, archanes = (fleet.get(s) for s in ("hersonissos", "minoa-pediada", SLUGS[0]))
    assert herso.watch_services == ("getty@tty1.service", "a-b_c.d:e.timer")
    assert minoa.watch_services == archanes.watch_services == ("kallikratis-probe.service",)
    assert (herso.patch_keep_snapshots, minoa.patch_keep_snapshots) == (3, 1)
    assert herso.apt_sources == ()  # [] leaves the image's sources alone
    assert [s["name"] for s in archanes.apt_sources] == ["debian", "debian-security"]
    [flat] = minoa.apt_sources
    assert flat["components"] == () and flat["suites"] == ("./",)
    assert flat["signed_by"] == ARMORED.strip()


def test_apt_sources_reach_ansible_as_plain_lists(inv: InventoryCopy, tmp_path: Path) -> None:
    inv.set_host("minoa-pediada", apt_sources=[FLAT_REPO])
    fleet = inv.load()
    got = stackvars.municipality_vars(fleet, fleet.get("minoa-pediada"), tmp_path)
    assert got["kallikratis_apt_sources"] == [{**FLAT_REPO, "signed_by": ARMORED.strip()}]
    none = stackvars.municipality_vars(fleet, fleet.get("hersonissos"), tmp_path)
    assert [s["name"] for s in none["kallikratis_apt_sources"]] == ["debian", "debian-security"]


def test_missing_fields_get_the_defaults(inv: InventoryCopy) -> None:
    inv.edit(inv.fleet_vars, lambda d: d.pop("apt_sources"))
    m = inv.load().get("hersonissos")
    assert (m.watch_services, m.patch_keep_snapshots, m.apt_sources) == ((), 1, ())


# --------------------------------------------------------------------------- bad values


_DROP = object()
SRC0 = "apt_sources[0]"
SRC1 = "apt_sources[1]"


def _source(index: int, **values: Any) -> Callable[[InventoryCopy], None]:
    """A mutation of the shipped apt_sources[index] in group_vars/all/fleet.yml."""

    def mutate(i: InventoryCopy) -> None:
        def change(data: dict[str, Any]) -> None:
            entry = data["apt_sources"][index]
            for key, value in values.items():
                if value is _DROP:
                    entry.pop(key)
                else:
                    entry[key] = value

        i.edit(i.fleet_vars, change)

    return mutate


BAD: dict[str, Bad] = {
    "watch-not-a-list": Bad(
        lambda i: i.set_host("hersonissos", watch_services="nginx.service"),
        HOSTS,
        "hersonissos",
        "watch_services",
        "must be a list",
    ),
    "watch-name-with-space": Bad(
        lambda i: i.set_host_var_file("hersonissos", watch_services=["nginx.service", "a b"]),
        HERSO_VARS,
        "hersonissos",
        "watch_services[1]",
        "not a systemd unit name",
    ),
    "watch-name-shell": Bad(
        lambda i: i.set_host("hersonissos", watch_services=["x;reboot"]),
        HOSTS,
        "hersonissos",
        "watch_services[0]",
        "'x;reboot'",
    ),
    "watch-name-trailing-newline": Bad(
        lambda i: i.set_host("hersonissos", watch_services=["nginx.service\n"]),
        HOSTS,
        "hersonissos",
        "watch_services[0]",
    ),
    "watch-name-not-a-string": Bad(
        lambda i: i.set_host("hersonissos", watch_services=[42]),
        HOSTS,
        "hersonissos",
        "watch_services[0]",
    ),
    "watch-in-group-vars-reported-once": Bad(
        lambda i: i.set_fleet(watch_services=["ok.service", "/etc/passwd"]),
        FLEET,
        "all",
        "watch_services[1]",
    ),
    "keep-zero": Bad(
        lambda i: i.set_host("hersonissos", patch_keep_snapshots=0),
        HOSTS,
        "hersonissos",
        "patch_keep_snapshots",
        "positive integer",
    ),
    "keep-negative-in-host-vars": Bad(
        lambda i: i.set_host_var_file("hersonissos", patch_keep_snapshots=-2),
        HERSO_VARS,
        "hersonissos",
        "patch_keep_snapshots",
    ),
    "keep-string": Bad(
        lambda i: i.set_host("hersonissos", patch_keep_snapshots="2"),
        HOSTS,
        "hersonissos",
        "patch_keep_snapshots",
        "'2'",
    ),
    "keep-boolean": Bad(
        lambda i: i.set_host("hersonissos", patch_keep_snapshots=True),
        HOSTS,
        "hersonissos",
        "patch_keep_snapshots",
    ),
    "keep-float": Bad(
        lambda i: i.set_host("hersonissos", patch_keep_snapshots=1.5),
        HOSTS,
        "hersonissos",
        "patch_keep_snapshots",
    ),
    "keep-in-group-vars-reported-once": Bad(
        lambda i: i.set_fleet(patch_keep_snapshots=0), FLEET, "all", "patch_keep_snapshots"
    ),
    "apt-not-a-list": Bad(
        lambda i: i.set_fleet(apt_sources={"name": "debian"}),
        FLEET,
        "all",
        "apt_sources",
        "must be a list",
    ),
    "apt-entry-not-a-mapping": Bad(
        lambda i: i.set_fleet(apt_sources=["deb http://deb.debian.org/debian trixie main"]),
        FLEET,
        "all",
        SRC0,
        "must be a mapping",
    ),
    "apt-unknown-key": Bad(_source(0, signed=True), FLEET, "all", SRC0, "unknown keys"),
    "apt-name-path": Bad(_source(1, name="../evil"), FLEET, "all", f"{SRC1}.name"),
    "apt-name-missing": Bad(_source(0, name=_DROP), FLEET, "all", f"{SRC0}.name"),
    "apt-name-duplicate": Bad(
        _source(1, name="debian"), FLEET, "all", f"{SRC1}.name", "used by another entry"
    ),
    "apt-uris-empty": Bad(_source(0, uris=[]), FLEET, "all", f"{SRC0}.uris", "non-empty list"),
    "apt-uris-a-string": Bad(
        _source(0, uris="http://deb.debian.org/debian"), FLEET, "all", f"{SRC0}.uris"
    ),
    "apt-uris-ftp": Bad(
        _source(1, uris=["ftp://security.debian.org/"]), FLEET, "all", f"{SRC1}.uris", "ftp://"
    ),
    "apt-uris-space": Bad(
        _source(0, uris=["http://deb.debian.org/debian trixie"]), FLEET, "all", f"{SRC0}.uris"
    ),
    "apt-suites-missing": Bad(_source(0, suites=_DROP), FLEET, "all", f"{SRC0}.suites"),
    "apt-suites-mixed": Bad(
        _source(0, suites=["trixie", "./"]), FLEET, "all", f"{SRC0}.suites", "mixes"
    ),
    "apt-components-missing": Bad(
        _source(0, components=_DROP), FLEET, "all", f"{SRC0}.components", "must list"
    ),
    "apt-components-for-flat-repo": Bad(
        _source(0, suites=["./"]), FLEET, "all", f"{SRC0}.components", "must be empty"
    ),
    "apt-component-newline": Bad(
        _source(0, components=["main\nTypes: deb-src"]), FLEET, "all", f"{SRC0}.components"
    ),
    "apt-component-trailing-newline": Bad(
        _source(1, components=["main\n"]), FLEET, "all", f"{SRC1}.components"
    ),
    "apt-signed-by-path-then-field": Bad(
        _source(0, signed_by="/usr/share/keyrings/x.pgp\nTrusted: yes"),
        FLEET,
        "all",
        f"{SRC0}.signed_by",
    ),
    "apt-signed-by-missing": Bad(
        _source(1, signed_by=_DROP), FLEET, "all", f"{SRC1}.signed_by", "absolute keyring path"
    ),
    "apt-signed-by-relative": Bad(
        _source(0, signed_by="debian-archive-keyring.pgp"), FLEET, "all", f"{SRC0}.signed_by"
    ),
    "apt-signed-by-truncated-key": Bad(
        _source(0, signed_by=ARMORED.replace("-----END PGP PUBLIC KEY BLOCK-----", "")),
        FLEET,
        "all",
        f"{SRC0}.signed_by",
        "must end with",
    ),
    "apt-in-host-vars": Bad(
        lambda i: i.set_host_var_file("hersonissos", apt_sources=[{**FLAT_REPO, "uris": []}]),
        HERSO_VARS,
        "hersonissos",
        f"{SRC0}.uris",
    ),
}


@pytest.mark.parametrize("case_id", list(BAD))
def test_bad_value_is_reported_once_with_file_entry_and_field(
    inv: InventoryCopy, case_id: str
) -> None:
    case = BAD[case_id]
    case.mutate(inv)
    before = inv.snapshot()
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert_one_problem(err.value, inv.root, case)
    assert inv.snapshot() == before


def test_group_vars_of_another_group_are_reported_under_its_name(inv: InventoryCopy) -> None:
    path = inv.root / "group_vars" / "municipalities.yml"
    path.write_text("patch_keep_snapshots: 0\n")
    with pytest.raises(InventoryError) as err:
        inv.load()
    [problem] = err.value.problems
    assert (problem.file, problem.entry, problem.field) == (
        str(path),
        "municipalities",
        "patch_keep_snapshots",
    )

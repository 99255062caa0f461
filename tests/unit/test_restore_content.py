"""The restore test's content check: what the archive holds, read from the dumps borgmatic
wrote (a MariaDB dump as mariadb-dump writes it, a real `sqlite3 .dump` of Kolibri's users
table) and from `borg list --json-lines`; what the restored VM holds, from the queries'
output; and what differs."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from kallikratis import model, restorecontent, restoreinto
from kallikratis.errors import KallikratisError
from kallikratis.restorecontent import Content
from support import DATA

RESTORE = DATA / "restore"


def _filtered(kind: str) -> str:
    """The dump as the restore test reads it: through its own filter on the VM (sed/grep)."""
    name = "wordpress.sql" if kind == "wordpress" else "kolibri.sql"
    script = restoreinto.dump_text_script(str(RESTORE / name), kind)
    done = subprocess.run(["sh", "-euc", script], capture_output=True, text=True, check=True)
    return done.stdout


def test_the_wordpress_dump_gives_published_posts_approved_comments_and_users() -> None:
    c = Content()
    restorecontent.from_wordpress_dump(_filtered("wordpress"), c)
    assert c.posts == {
        "1": "Ανακοίνωση: ύδρευση (Γούβες), 1η φάση",
        "3": "Επικοινωνία",  # a published page counts too (and a consultation would)
        "5": "Διαβούλευση: O'Brien, κ.ά.",
        "7": "NULL",  # a quoted 'NULL' is a title, not SQL's NULL
    }
    assert c.comments == {"1", "3"}  # the spam one is not approved
    assert c.users == {"admin", "syntaktis"}


def test_the_kolibri_dump_gives_its_users() -> None:
    c = Content()
    restorecontent.from_kolibri_dump(_filtered("kolibri"), c)
    assert c.learners == {"admin", "kk-learner-1"}


def test_values_with_quotes_commas_parentheses_and_escapes_are_read_whole() -> None:
    text = (RESTORE / "wordpress.sql").read_text()
    rows = restorecontent.tables(text, {"wp_posts"}, backslash=True)["wp_posts"]
    first = rows[0]
    assert first["post_content"] == (
        '<p>Η πρώτη ανακοίνωση, με "εισαγωγικά" και \\ ανάποδη κάθετο.</p>'
    )
    assert rows[3]["post_content"] == "Κείμενο;\r\nμε γραμμές"
    assert [r["ID"] for r in rows] == ["1", "2", "3", "5", "6", "7"]


def test_a_dump_with_column_names_in_each_insert_is_read_by_name() -> None:
    text = (
        "CREATE TABLE `wp_users` (\n  `ID` bigint,\n  `user_login` varchar(60)\n);\n"
        "INSERT INTO `wp_users` (`user_login`, `ID`) VALUES ('dimarxos',9),('grammateas',10);\n"
    )
    rows = restorecontent.tables(text, {"wp_users"}, backslash=True)["wp_users"]
    assert rows == [{"user_login": "dimarxos", "ID": "9"}, {"user_login": "grammateas", "ID": "10"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "CREATE TABLE `wp_users` (\n  `ID` int\n);\nINSERT INTO `wp_users` VALUES ('ab",
            "truncated",
        ),
        ("INSERT INTO `wp_users` VALUES (1);\n", "never creates it"),
        (
            "CREATE TABLE `wp_users` (\n  `ID` int\n);\nINSERT INTO `wp_users` VALUES (1,2);",
            "2 values",
        ),
    ],
)
def test_a_broken_dump_is_an_error_not_a_guess(text: str, message: str) -> None:
    with pytest.raises(KallikratisError, match=message):
        restorecontent.tables(text, {"wp_users"}, backslash=True)


def test_a_dump_without_the_wordpress_tables_fails_the_check() -> None:
    with pytest.raises(KallikratisError, match="no wp_posts"):
        restorecontent.from_wordpress_dump("-- nothing\n", Content())


def test_uploads_come_from_the_archives_file_list() -> None:
    items = [
        {"type": "d", "path": "var/lib/wordpress/wp-content/uploads/2026", "size": 0},
        {"type": "-", "path": "var/lib/wordpress/wp-content/uploads/2026/12/α.txt", "size": 17},
        {"type": "-", "path": "var/lib/wordpress/wp-content/uploads-old/x", "size": 1},
        {"type": "-", "path": "var/lib/kolibri/db.sqlite3", "size": 4096},
    ]
    text = "\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n"
    assert restorecontent.from_file_list(text, "var/lib/wordpress/wp-content/uploads") == {
        "2026/12/α.txt": 17
    }


def test_the_restored_vms_uploads_come_from_find(tmp_path: Path) -> None:
    (tmp_path / "2026" / "12").mkdir(parents=True)
    (tmp_path / "2026" / "12" / "με κενό.txt").write_text("uploaded\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG" * 10)
    out = subprocess.run(
        ["find", str(tmp_path), "-type", "f", "-printf", "%s %P\\0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert restorecontent.parse_find(out) == {"2026/12/με κενό.txt": 9, "logo.png": 40}


def test_the_restored_vms_answers_are_parsed_by_section() -> None:
    text = (
        "#posts\n"
        + json.dumps({"id": 1, "title": "Ανακοίνωση"}, ensure_ascii=False)
        + "\n#comments\n"
        + json.dumps({"id": 3})
        + "\n#users\n"
        + json.dumps({"login": "admin"})
        + "\n#uploads\n12 2026/a.txt\0"
        + "3 b.txt\0\n#learners\n"
        + json.dumps([{"login": "kk-learner-1"}])
        + "\n"
    )
    c = restoreinto.parse_actual(text)
    assert c.posts == {"1": "Ανακοίνωση"}
    assert c.comments == {"3"}
    assert c.users == {"admin"}
    assert c.uploads == {"2026/a.txt": 12, "b.txt": 3}
    assert c.learners == {"kk-learner-1"}


def _content() -> Content:
    return Content(
        posts={"1": "Ανακοίνωση", "5": "Διαβούλευση"},
        comments={"1", "3"},
        users={"admin"},
        uploads={"2026/12/a.txt": 17},
        learners={"admin", "kk-learner-1"},
    )


def test_the_same_content_passes() -> None:
    assert restorecontent.compare(_content(), _content()) == []


def test_every_difference_is_named() -> None:
    actual = _content()
    del actual.posts["5"]
    actual.posts["9"] = "Νέα"
    actual.comments.discard("3")
    actual.uploads["2026/12/a.txt"] = 0
    actual.learners.discard("kk-learner-1")
    diff = restorecontent.compare(_content(), actual)
    assert diff == [
        "published posts missing on the restored VM: '5'",
        "published posts on the restored VM but not in the archive: '9'",
        "approved comments missing on the restored VM: '3'",
        "uploads that differ: '2026/12/a.txt'",
        "Kolibri users missing on the restored VM: 'kk-learner-1'",
    ]
    with pytest.raises(KallikratisError, match="^published posts missing on the restored VM"):
        restoreinto.check_content(_content(), actual)


def test_a_changed_title_is_a_difference() -> None:
    actual = _content()
    actual.posts["1"] = "Αλλαγμένη"
    assert restorecontent.compare(_content(), actual) == ["published posts that differ: '1'"]


def test_the_placing_follows_the_modules_and_moves_the_site_only_when_asked(
    test_fleet: model.Fleet,
) -> None:
    dumps = restoreinto.Dumps("/s/borgmatic/mariadb_databases/localhost/wordpress", "/s/k")
    herso = test_fleet.get("hersonissos")  # every module
    script = restoreinto.place_script(herso, dumps)
    assert script.index("systemctl stop kolibri") < script.index("sqlite3 /var/lib/kolibri")
    assert script.index("chown -R kolibri:kolibri") < script.index("systemctl start kolibri")
    assert "mariadb wordpress < /s/borgmatic/mariadb_databases/localhost/wordpress" in script
    assert "etc/kallikratis" not in script  # the target's own configuration stays
    assert "siteurl" not in script
    assert script.rstrip().endswith(f"rm -rf {restoreinto.STAGING}")
    moved = restoreinto.place_script(herso, dumps, site_moved=True)
    [update] = [shlex.split(line)[-1] for line in moved.splitlines() if "UPDATE" in line]
    assert f"option_value = 'https://{herso.domain}'" in update and "'siteurl', 'home'" in update
    archanes = test_fleet.get("archanes-asterousia")  # portal and opendata, no Kolibri
    plain = restoreinto.place_script(archanes, restoreinto.Dumps("/s/w"))
    assert "kolibri" not in plain and "mariadb wordpress < /s/w" in plain

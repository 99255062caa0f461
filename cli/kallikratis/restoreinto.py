"""Restore a municipality's archive into ANOTHER VM: a restore test's throwaway, or `restore
--to-new`'s new municipality.

That VM cannot (and must not) reach the municipality's repository on control: the archive
goes through the controller. ``borg export-tar`` runs on control as the backup user (the
passphrase on its standard input, as prune does: :func:`kallikratis.backups.store_script`),
its tar stream is piped by the controller straight into ``tar -x`` on the target VM, over the
pinned SSH path both ways: streamed, never stored on the controller. On the target VM the
files are moved into place (uploads, Kolibri's home: :func:`kallikratis.restore.restore_paths`
but ``/etc/kallikratis``, which is the target VM's own configuration written by its deploy),
WordPress' MariaDB dump and Kolibri's SQLite dump (as borgmatic put them in the archive) are
loaded, Kolibri is stopped meanwhile, its files given back to it and started again.

This proves too that the repository and the vault's passphrase alone suffice: nothing of the
municipality's own VM is used.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from dataclasses import dataclass

from kallikratis import model, restorecontent
from kallikratis.backups import LOCK_WAIT, store_script
from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest, GuestError
from kallikratis.restore import KOLIBRI_HOME, KOLIBRI_USER, UPLOADS_PATH
from kallikratis.stackvars import BACKUP_STORE_DIR, BACKUP_STORE_USER

#: where the archive is unpacked on the target VM (root only), removed once placed
STAGING = "/var/lib/kallikratis-restore/staging"
RELAY_TIMEOUT = 3 * 3600.0
KOLIBRI_DB = f"{KOLIBRI_HOME}/db.sqlite3"
WP_DATABASE = "wordpress"  # roles/backup: backup_portal_database
#: the dumps' names in the archive: borgmatic 1.9 (trixie) writes
#: borgmatic/<hook>/<host>/<name>, 1.7 root/.borgmatic/<hook>/<host>/<name>
DUMP_ROOTS = ("borgmatic", "root/.borgmatic")
DUMPS = {
    "wordpress": ("mariadb_databases", WP_DATABASE),
    "kolibri": ("sqlite_databases", "kolibri"),
}


@dataclass(frozen=True)
class Dumps:
    """Where the archive's database dumps are in the staging directory ("" = not needed)."""

    wordpress: str = ""
    kolibri: str = ""


def export_script(
    slug: str, archive: str, user: str = BACKUP_STORE_USER, home: str = BACKUP_STORE_DIR
) -> str:
    """On control: the archive as a tar stream on stdout (the passphrase on stdin)."""
    argv = ["--lock-wait", LOCK_WAIT, "export-tar", f"{home}/{slug}::{archive}", "-"]
    return store_script([argv], keyed=[True], data=True, user=user, home=home)


def list_script(
    slug: str, archive: str, user: str = BACKUP_STORE_USER, home: str = BACKUP_STORE_DIR
) -> str:
    """On control: the archive's items, one JSON object a line."""
    argv = ["--lock-wait", LOCK_WAIT, "list", "--json-lines", f"{home}/{slug}::{archive}"]
    return store_script([argv], keyed=[True], data=True, user=user, home=home)


def receive_script(staging: str = STAGING) -> str:
    """On the target VM: a tar stream on stdin unpacked into an empty staging directory."""
    s = shlex.quote(staging)
    return (
        f"rm -rf {s}\ninstall -d -m 0700 {s}\ntar -x --same-owner --same-permissions -C {s} -f -\n"
    )


def locate_script(m: model.Municipality, staging: str = STAGING) -> str:
    """On the target VM: each needed dump's path (``name<TAB>path``); fails naming a missing
    one."""
    lines = []
    needed = {"wordpress": "portal" in m.modules, "kolibri": "education" in m.modules}
    for name, (hook, db) in DUMPS.items():
        if not needed[name]:
            continue
        where = " -o ".join(
            f"-path {shlex.quote(f'{staging}/{layout}/{hook}/*')}" for layout in DUMP_ROOTS
        )
        found = (
            f"$(find {shlex.quote(staging)} -type f \\( {where} \\) -name {shlex.quote(db)}"
            " | head -n 1)"
        )
        why = (
            f"the archive has no {hook} dump of {db} (borgmatic/{hook}/localhost/{db} or "
            f"root/.borgmatic/{hook}/localhost/{db}): was it made by roles/backup?"
        )
        lines += [
            f"p={found}",
            f'[ -n "$p" ] || {{ echo {shlex.quote(why)} >&2; exit 3; }}',
            f"printf '%s\\t%s\\n' {name} \"$p\"",
        ]
    return "\n".join(lines) + "\n" if lines else "true\n"


def parse_located(text: str) -> Dumps:
    found = dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    return Dumps(found.get("wordpress", ""), found.get("kolibri", ""))


def dump_text_script(path: str, kind: str) -> str:
    """On the target VM: only the dump's statements the content check reads."""
    p = shlex.quote(path)
    if kind == "wordpress":
        tables = "wp_\\(posts\\|comments\\|users\\)"
        # an INSERT runs to the line ending in ';': MariaDB 11's mariadb-dump puts each row on
        # a line of its own after "INSERT INTO `t` VALUES" (strings never hold a raw newline)
        return (
            f"sed -n -e '/^CREATE TABLE `{tables}`/,/^)/p'"
            f" -e '/^INSERT INTO `{tables}`/,/;$/p' {p}\n"
        )
    t = restorecontent.LEARNERS
    return (
        f'grep -E \'^(CREATE TABLE (IF NOT EXISTS )?"?{t}"? |INSERT INTO "?{t}"? )\' {p} || true\n'
    )


def place_script(m: model.Municipality, dumps: Dumps, site_moved: bool = False) -> str:
    """On the target VM: files into place, dumps loaded, Kolibri restarted, staging removed.
    *site_moved*: the archive is another municipality's (`restore --to-new`), whose
    WordPress addresses are replaced by the target's own domain."""
    education = "education" in m.modules
    uploads_src = f"{STAGING}/{UPLOADS_PATH}"
    kolibri_src = f"{STAGING}{KOLIBRI_HOME}"
    lines = []
    if education:
        lines.append("systemctl stop kolibri.service")
    if "portal" in m.modules:
        lines += [
            f"if [ -d {uploads_src} ]; then rm -rf /{UPLOADS_PATH}; "
            f"mv {uploads_src} /{UPLOADS_PATH}; fi",
            f"mariadb {WP_DATABASE} < {shlex.quote(dumps.wordpress)}",
        ]
        if site_moved:
            url = f"https://{m.domain}"  # a validated domain name: no quote in it
            sql = (
                f"UPDATE wp_options SET option_value = '{url}' "
                "WHERE option_name IN ('siteurl', 'home')"
            )
            lines.append(f"mariadb {WP_DATABASE} -e {shlex.quote(sql)}")
    if education:
        lines += [
            f"if [ -d {kolibri_src} ]; then cp -a {kolibri_src}/. {KOLIBRI_HOME}/; fi",
            # the original's PID file means nothing here; its database comes from the dump
            f"rm -f {KOLIBRI_HOME}/server.pid {KOLIBRI_DB} {KOLIBRI_DB}-wal {KOLIBRI_DB}-shm",
            f"sqlite3 {KOLIBRI_DB} < {shlex.quote(dumps.kolibri)}",
            f"chown -R {KOLIBRI_USER}:{KOLIBRI_USER} {KOLIBRI_HOME}",
            "systemctl start kolibri.service",
        ]
    lines.append(f"rm -rf {STAGING}")
    return "\n".join(lines) + "\n"


def actual_script(m: model.Municipality) -> str:
    """On the restored VM: what it holds, as JSON lines and a find listing (section markers)."""
    q = {
        "posts": "SELECT JSON_OBJECT('id', ID, 'title', post_title) FROM wp_posts "
        "WHERE post_type IN ("
        + ", ".join(f"'{t}'" for t in restorecontent.PUBLIC_TYPES)
        + ") AND post_status = 'publish'",
        "comments": "SELECT JSON_OBJECT('id', comment_ID) FROM wp_comments "
        "WHERE comment_approved = '1'",
        "users": "SELECT JSON_OBJECT('login', user_login) FROM wp_users",
    }
    lines = []
    if "portal" in m.modules:
        for name, sql in q.items():
            lines += [f"echo '#{name}'", f"mariadb -N -B -r {WP_DATABASE} -e {shlex.quote(sql)}"]
        lines += ["echo '#uploads'", f"find /{UPLOADS_PATH} -type f -printf '%s %P\\0'", "echo"]
    if "education" in m.modules:
        sql = f"SELECT username AS login FROM {restorecontent.LEARNERS}"
        lines += [
            "echo '#learners'",
            f"sqlite3 -json {KOLIBRI_DB} {shlex.quote(sql)} | tr -d '\\n'",
        ]
        lines.append("echo")
    return "\n".join(lines) + "\n"


def parse_actual(text: str) -> restorecontent.Content:
    """actual_script's output: one section per kind of content (the Content's own fields)."""
    kinds = restorecontent.Content().counts().keys()
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.split("\n"):
        if line.startswith("#") and line[1:] in kinds:
            current = line[1:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    c = restorecontent.Content()
    js = restorecontent.parse_json_lines
    c.posts = {str(r["id"]): str(r["title"]) for r in js("\n".join(sections.get("posts", [])))}
    c.comments = {str(r["id"]) for r in js("\n".join(sections.get("comments", [])))}
    c.users = {str(r["login"]) for r in js("\n".join(sections.get("users", [])))}
    c.uploads = restorecontent.parse_find("\n".join(sections.get("uploads", [])))
    learners = "".join(sections.get("learners", [])).strip()
    c.learners = {str(r["login"]) for r in (json.loads(learners) if learners else [])}
    return c


def relay(source: list[str], stdin: str, sink: list[str], timeout: float = RELAY_TIMEOUT) -> None:
    """*source*'s stdout piped into *sink* by this process (no file in between); *stdin*
    (the passphrase) fed to *source* only. Both must succeed."""
    src = subprocess.Popen(
        source, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    dst = subprocess.Popen(sink, stdin=src.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert src.stdin is not None and src.stdout is not None and src.stderr is not None
    src.stdout.close()  # the sink holds the read end: the source sees EPIPE if the sink dies
    errors: list[bytes] = []
    src_stderr = src.stderr
    reader = threading.Thread(target=lambda: errors.append(src_stderr.read()), daemon=True)
    reader.start()
    try:
        src.stdin.write(stdin.encode())
        src.stdin.close()
    except BrokenPipeError:
        pass
    try:
        _, dst_err = dst.communicate(timeout=timeout)
        src.wait(timeout=60)
    except subprocess.TimeoutExpired:
        src.kill()
        dst.kill()
        src.wait()
        dst.wait()
        raise GuestError(f"the archive's relay timed out after {timeout:.0f} s") from None
    finally:
        reader.join(timeout=10)
    problems = []  # both when both failed: which one broke the pipe is not always clear
    if src.returncode != 0:
        tail = b"".join(errors).decode(errors="replace").strip()[-600:]
        problems.append(f"borg export-tar on control: exit {src.returncode}: {tail}")
    if dst.returncode != 0:
        tail = dst_err.decode(errors="replace").strip()[-600:]
        problems.append(f"tar on the target VM: exit {dst.returncode}: {tail}")
    if problems:
        raise GuestError("; ".join(problems))


class Transplant:
    """*source*'s *archive* into the VM behind *target*, through the controller."""

    def __init__(
        self, source: str, archive: str, control: Guest, target: Guest, passphrase: str
    ) -> None:
        self.source = source
        self.archive = archive
        self.control = control
        self.target = target
        self.passphrase = passphrase

    def expected_uploads(self, uploads: bool) -> dict[str, int]:
        if not uploads:
            return {}
        out = self.control.run(
            list_script(self.source, self.archive), RELAY_TIMEOUT, stdin=self.passphrase + "\n"
        )
        return restorecontent.from_file_list(out, UPLOADS_PATH)

    def receive(self) -> None:
        relay(
            self.control.command(export_script(self.source, self.archive)),
            self.passphrase + "\n",
            self.target.command(receive_script()),
        )

    def expected(self, m: model.Municipality, dumps: Dumps) -> restorecontent.Content:
        """The archive's content: its dumps (unpacked on the target) and its file list."""
        c = restorecontent.Content()
        if dumps.wordpress:
            text = self.target.run(dump_text_script(dumps.wordpress, "wordpress"), RELAY_TIMEOUT)
            restorecontent.from_wordpress_dump(text, c)
        if dumps.kolibri:
            text = self.target.run(dump_text_script(dumps.kolibri, "kolibri"), RELAY_TIMEOUT)
            restorecontent.from_kolibri_dump(text, c)
        c.uploads = self.expected_uploads("portal" in m.modules)
        return c

    def place(self, m: model.Municipality, moved: bool = False) -> restorecontent.Content:
        """Locate the dumps, read the expected content, put everything in place (*m*: the
        target VM's municipality; *moved*: see :func:`place_script`)."""
        dumps = parse_located(self.target.run(locate_script(m)))
        expected = self.expected(m, dumps)
        self.target.run(place_script(m, dumps, site_moved=moved), RELAY_TIMEOUT)
        return expected

    def run(self, m: model.Municipality, moved: bool = False) -> restorecontent.Content:
        """The whole restore into *m*'s VM: receive, place; the archive's expected content."""
        self.receive()
        return self.place(m, moved)

    def actual(self, m: model.Municipality) -> restorecontent.Content:
        return parse_actual(self.target.run(actual_script(m), RELAY_TIMEOUT))


def check_content(expected: restorecontent.Content, actual: restorecontent.Content) -> None:
    diff = restorecontent.compare(expected, actual)
    if diff:
        raise KallikratisError("; ".join(diff))  # the caller names the phase

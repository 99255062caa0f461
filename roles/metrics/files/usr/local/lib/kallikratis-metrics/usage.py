"""Use of the platform, counts only (no personal data leaves the VM): requests per module from
nginx's access log, and the modules' own databases (WordPress, Datasette, Kolibri)."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from textfile import Sample

FAMILIES = {
    "kallikratis_http_requests_total": ("counter", "HTTP requests served, by module."),
    "kallikratis_portal_posts_published": ("gauge", "Published portal posts."),
    "kallikratis_portal_last_post_timestamp_seconds": ("gauge", "Date of the newest post (UTC)."),
    "kallikratis_consultations": ("gauge", "Published public consultations, by state."),
    "kallikratis_consultation_comments": ("gauge", "Approved comments on consultations."),
    "kallikratis_datasets": ("gauge", "Open datasets (tables) published."),
    "kallikratis_dataset_rows": ("gauge", "Rows in all open datasets."),
    "kallikratis_kolibri_learners": ("gauge", "Kolibri users without an admin or coach role."),
    "kallikratis_kolibri_sessions": ("gauge", "Kolibri user sessions logged."),
}

#: the request line of nginx's combined format: ... "METHOD URI PROTOCOL" ...
_REQUEST = re.compile(r'"[A-Z]+ (\S+)[^"]*"')
#: MODULES in the order they are matched: (module, URI prefix)
_PREFIXES = (("opendata", "/data/"), ("education", "/learn/"))

Query = Callable[[str], list[tuple]]


def classify(uri: str, modules: set[str]) -> str:
    for module, prefix in _PREFIXES:
        if module in modules and (uri.startswith(prefix) or uri == prefix[:-1]):
            return module
    return "portal" if "portal" in modules else "other"


def _count_lines(data: bytes, modules: set[str], counts: dict[str, int]) -> None:
    for raw in data.splitlines():
        match = _REQUEST.search(raw.decode("utf-8", errors="replace"))
        module = classify(match.group(1), modules) if match else "other"
        counts[module] = counts.get(module, 0) + 1


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """Complete lines of PATH after OFFSET and the offset after them."""
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def requests(log: Path, modules: set[str], state: dict) -> list[Sample]:
    """kallikratis_http_requests_total: counts kept in STATE with the log's inode and offset, so
    the counter survives rotation (the rest of the rotated file is read first) and restarts."""
    counts: dict[str, int] = {k: int(v) for k, v in state.get("counts", {}).items()}
    inode, offset = state.get("inode"), int(state.get("offset", 0))
    st = log.stat() if log.exists() else None
    if st is not None and st.st_ino == inode and st.st_size < offset:
        offset = 0  # truncated in place (copytruncate)
    elif st is None or st.st_ino != inode:
        rotated = log.with_name(log.name + ".1")
        if inode is not None and rotated.exists() and rotated.stat().st_ino == inode:
            data, _ = _read_from(rotated, offset)
            _count_lines(data, modules, counts)
        offset = 0
    if st is not None:
        data, offset = _read_from(log, offset)
        _count_lines(data, modules, counts)
        state["inode"] = st.st_ino
    else:
        state["inode"] = None
    state["offset"], state["counts"] = offset, counts
    keep = ["other", *sorted(modules & {"portal", "opendata", "education"})]
    return [("kallikratis_http_requests_total", {"module": m}, counts.get(m, 0)) for m in keep]


def mariadb_query(database: str) -> Query:
    """Run SQL with the mariadb client as root over the unix socket (no password anywhere)."""

    def run(sql: str) -> list[tuple]:
        out = subprocess.run(
            ["mariadb", "--batch", "--skip-column-names", "--database", database],
            input=sql,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return [tuple(line.split("\t")) for line in out.splitlines()]

    return run


def _timestamp(value: object) -> float:
    """WordPress's post_date_gmt ('YYYY-MM-DD HH:MM:SS', UTC) as a Unix time; 0 for none."""
    if value in (None, "", "NULL", "0000-00-00 00:00:00"):
        return 0.0
    when = dt.datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    return when.timestamp()


def portal(query: Query, prefix: str = "wp_") -> list[Sample]:
    posts = f"FROM {prefix}posts WHERE post_type = 'post' AND post_status = 'publish'"
    (count, newest) = query(f"SELECT COUNT(*), MAX(post_date_gmt) {posts};")[0]
    # open = before its deadline (post meta kallikratis_deadline, local "Y-m-d H:i", which the
    # portal closes comments at); without one, as WordPress's comment status says
    rows = query(
        f"SELECT p.comment_status, COALESCE(m.meta_value, '') FROM {prefix}posts p"
        f" LEFT JOIN {prefix}postmeta m ON m.post_id = p.ID AND m.meta_key = 'kallikratis_deadline'"
        " WHERE p.post_type = 'consultation' AND p.post_status = 'publish' AND p.post_parent = 0;"
    )
    now = time.strftime("%Y-%m-%d %H:%M")
    open_ = sum(
        1 for status, deadline in rows if (deadline >= now if deadline else status == "open")
    )
    comments = query(
        f"SELECT COUNT(*) FROM {prefix}comments c JOIN {prefix}posts p ON p.ID = c.comment_post_ID"
        " WHERE p.post_type = 'consultation' AND c.comment_approved = '1';"
    )[0][0]
    closed = len(rows) - open_
    return [
        ("kallikratis_portal_posts_published", {}, int(count)),
        ("kallikratis_portal_last_post_timestamp_seconds", {}, _timestamp(newest)),
        ("kallikratis_consultations", {"state": "open"}, open_),
        ("kallikratis_consultations", {"state": "closed"}, closed),
        ("kallikratis_consultation_comments", {}, int(comments)),
    ]


def _readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def opendata(database: Path) -> list[Sample]:
    with closing(_readonly(database)) as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'"
            )
            if not re.search(r"_fts(_\w+)?$", r[0])
        ]
        quoted = ['"' + t.replace('"', '""') + '"' for t in tables]
        rows = sum(db.execute(f"SELECT COUNT(*) FROM {q}").fetchone()[0] for q in quoted)
    return [("kallikratis_datasets", {}, len(tables)), ("kallikratis_dataset_rows", {}, rows)]


def education(database: Path) -> list[Sample]:
    with closing(_readonly(database)) as db:
        learners = db.execute(
            "SELECT COUNT(*) FROM kolibriauth_facilityuser u WHERE NOT EXISTS"
            " (SELECT 1 FROM kolibriauth_role r WHERE r.user_id = u.id)"
        ).fetchone()[0]
        sessions = db.execute("SELECT COUNT(*) FROM logger_usersessionlog").fetchone()[0]
    return [
        ("kallikratis_kolibri_learners", {}, learners),
        ("kallikratis_kolibri_sessions", {}, sessions),
    ]

"""The content check of a restore test: the same posts, comments, users, uploads and learners
as the archive.

The expected set is read from the archive itself, never from the municipality's VM (which has
moved on since): WordPress' MariaDB dump and Kolibri's SQLite dump that borgmatic put in the
archive are parsed here (their ``CREATE TABLE`` and ``INSERT`` statements), and the uploads
come from the archive's file list (``borg list --json-lines``). The actual set is read from the
restored VM: MariaDB and SQLite queries, and ``find`` in the uploads directory.
:func:`compare` says what differs. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kallikratis.errors import KallikratisError

#: WordPress' tables (roles/portal keeps WordPress' default prefix)
POSTS, COMMENTS, USERS = "wp_posts", "wp_comments", "wp_users"
#: what a citizen reads: news, pages, consultations and their articles (roles/portal's type)
PUBLIC_TYPES = ("post", "page", "consultation")
LEARNERS = "kolibriauth_facilityuser"
_CREATE = re.compile(r'^CREATE TABLE (?:IF NOT EXISTS )?[`"]?(\w+)[`"]?\s*\(', re.M)
_INSERT = re.compile(r'^INSERT INTO [`"]?(\w+)[`"]?\s*(\([^)]*\))?\s*VALUES\s*', re.M)
_CONSTRAINTS = ("PRIMARY", "UNIQUE", "KEY", "CONSTRAINT", "FOREIGN", "CHECK", "INDEX", "FULLTEXT")


@dataclass
class Content:
    """What a site holds, as the content check compares it."""

    posts: dict[str, str] = field(default_factory=dict)  # published post id -> title
    comments: set[str] = field(default_factory=set)  # approved comment ids
    users: set[str] = field(default_factory=set)  # WordPress user logins
    uploads: dict[str, int] = field(default_factory=dict)  # path under uploads -> size
    learners: set[str] = field(default_factory=set)  # Kolibri usernames

    def counts(self) -> dict[str, int]:
        return {
            "posts": len(self.posts),
            "comments": len(self.comments),
            "users": len(self.users),
            "uploads": len(self.uploads),
            "learners": len(self.learners),
        }


# -- SQL dumps ----------------------------------------------------------------------------------
def _string(text: str, pos: int, backslash: bool) -> tuple[str, int]:
    """A quoted SQL string starting at *pos* (the quote); (value, position after it)."""
    out = []
    pos += 1
    escapes = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "Z": "\x1a"}
    while pos < len(text):
        c = text[pos]
        if backslash and c == "\\" and pos + 1 < len(text):
            out.append(escapes.get(text[pos + 1], text[pos + 1]))
            pos += 2
        elif c == "'":
            if text.startswith("''", pos):
                out.append("'")
                pos += 2
            else:
                return "".join(out), pos + 1
        else:
            out.append(c)
            pos += 1
    raise KallikratisError("a SQL dump ends inside a quoted string (a truncated dump?)")


def _token(text: str, pos: int) -> tuple[str | None, int]:
    """An unquoted value (number, NULL, a function call kept as text)."""
    depth, start = 0, pos
    while pos < len(text):
        c = text[pos]
        if c == "'":
            _, pos = _string(text, pos, backslash=False)
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth == 0 or c == "," and depth == 0:
            break
        elif c == ")":
            depth -= 1
        pos += 1
    raw = text[start:pos].strip()
    return (None if raw.upper() == "NULL" else raw), pos


def rows(text: str, pos: int, backslash: bool) -> Iterator[list[str | None]]:
    """The value tuples of one ``INSERT ... VALUES (..),(..);`` starting at *pos*."""
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == ";":
            return
        if text[pos] != "(":
            raise KallikratisError(f"a SQL dump: expected '(' at {text[pos : pos + 40]!r}")
        pos += 1
        row: list[str | None] = []
        while True:
            while text[pos] in " \t\r\n":
                pos += 1
            if text[pos] == "'":
                value, pos = _string(text, pos, backslash)
                row.append(value)
            else:
                token, pos = _token(text, pos)
                row.append(token)
            while text[pos] in " \t\r\n":
                pos += 1
            if text[pos] == ",":
                pos += 1
                continue
            pos += 1  # ")"
            break
        yield row


def _split_top(body: str) -> list[str]:
    parts, depth, start, pos = [], 0, 0, 0
    while pos < len(body):
        c = body[pos]
        if c == "'":
            _, pos = _string(body, pos, backslash=False)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                break
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(body[start:pos])
            start = pos + 1
        pos += 1
    parts.append(body[start:pos])
    return parts


def _names(parts: list[str]) -> list[str]:
    out = []
    for part in parts:
        words = part.strip().split()
        if words and words[0].upper() not in _CONSTRAINTS:
            out.append(words[0].strip('`"[]'))
    return out


def tables(text: str, wanted: set[str], *, backslash: bool) -> dict[str, list[dict[str, Any]]]:
    """The rows of the *wanted* tables of a dump, as column -> value mappings.

    *backslash*: MySQL/MariaDB escapes (mysqldump); SQLite's ``.dump`` only doubles quotes.
    """
    columns: dict[str, list[str]] = {}
    for match in _CREATE.finditer(text):
        if match.group(1) in wanted:
            columns[match.group(1)] = _names(_split_top(text[match.end() :]))
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in wanted if t in columns}
    for match in _INSERT.finditer(text):
        table = match.group(1)
        if table not in wanted:
            continue
        if table not in columns:
            raise KallikratisError(f"the dump inserts into {table} but never creates it")
        names = _names(_split_top(match.group(2)[1:])) if match.group(2) else columns[table]
        for row in rows(text, match.end(), backslash):
            if len(row) != len(names):
                raise KallikratisError(
                    f"the dump's {table} row has {len(row)} values for {len(names)} columns"
                )
            out[table].append(dict(zip(names, row, strict=True)))
    return out


def from_wordpress_dump(text: str, into: Content) -> None:
    """Published posts, approved comments and users of WordPress' MariaDB dump."""
    found = tables(text, {POSTS, COMMENTS, USERS}, backslash=True)
    if POSTS not in found or USERS not in found:
        raise KallikratisError("the WordPress dump has no wp_posts or wp_users table")
    into.posts = {
        str(r["ID"]): str(r["post_title"])
        for r in found[POSTS]
        if r.get("post_type") in PUBLIC_TYPES and r.get("post_status") == "publish"
    }
    into.comments = {
        str(r["comment_ID"]) for r in found.get(COMMENTS, []) if r.get("comment_approved") == "1"
    }
    into.users = {str(r["user_login"]) for r in found[USERS]}


def from_kolibri_dump(text: str, into: Content) -> None:
    found = tables(text, {LEARNERS}, backslash=False)
    if LEARNERS not in found:
        raise KallikratisError(f"the Kolibri dump has no {LEARNERS} table")
    into.learners = {str(r["username"]) for r in found[LEARNERS]}


def from_file_list(text: str, uploads: str) -> dict[str, int]:
    """Regular files under *uploads* (a path as borg names it) of ``borg list --json-lines``."""
    prefix = uploads.strip("/") + "/"
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise KallikratisError(f"borg list --json-lines: not JSON: {line[:200]!r}") from None
        path = str(item.get("path", ""))
        if item.get("type") == "-" and path.startswith(prefix):
            out[path[len(prefix) :]] = int(item.get("size", 0))
    return out


# -- the restored VM ------------------------------------------------------------------------------
def parse_find(text: str) -> dict[str, int]:
    """``find DIR -type f -printf '%s %P\\0'``: relative path -> size."""
    out = {}
    for entry in text.split("\0"):
        if entry.strip():
            size, _, path = entry.lstrip("\n").partition(" ")
            out[path] = int(size)
    return out


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise KallikratisError(f"a query's output: not JSON: {line[:200]!r}") from None
    return out


# -- comparison -----------------------------------------------------------------------------------
def _sample(items: Any) -> str:
    items = sorted(items)
    shown = ", ".join(repr(i) for i in items[:5])
    return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _diff_map(what: str, want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    out = []
    if missing := set(want) - set(have):
        out.append(f"{what} missing on the restored VM: {_sample(missing)}")
    if extra := set(have) - set(want):
        out.append(f"{what} on the restored VM but not in the archive: {_sample(extra)}")
    if changed := {k for k in set(want) & set(have) if want[k] != have[k]}:
        out.append(f"{what} that differ: {_sample(changed)}")
    return out


def compare(expected: Content, actual: Content) -> list[str]:
    """What differs between the archive's content and the restored VM's ([] = the same)."""
    out = _diff_map("published posts", expected.posts, actual.posts)
    out += _diff_map(
        "approved comments", dict.fromkeys(expected.comments), dict.fromkeys(actual.comments)
    )
    out += _diff_map("WordPress users", dict.fromkeys(expected.users), dict.fromkeys(actual.users))
    out += _diff_map("uploads", expected.uploads, actual.uploads)
    out += _diff_map(
        "Kolibri users", dict.fromkeys(expected.learners), dict.fromkeys(actual.learners)
    )
    return out

"""The audit journal: who changed what, when, from which inventory commit, with what result.

A local SQLite database, ``<state_dir>/journal.sqlite`` (WAL mode, schema version in
``PRAGMA user_version``). A run row is written when a command starts (status ``running``) and
completed when it ends, so a run killed on the way leaves a ``running`` row; :meth:`Journal.runs`
reports it as ``interrupted`` once its process is gone. Environment variables are never recorded.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kallikratis.errors import KallikratisError
from kallikratis.paths import StateDir

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    argv TEXT NOT NULL,
    user TEXT NOT NULL,
    sudo_user TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL DEFAULT '',
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,
    exit_code INTEGER,
    message TEXT NOT NULL DEFAULT '',
    inventory TEXT NOT NULL DEFAULT '',
    git_commit TEXT,
    git_dirty INTEGER,
    artifacts TEXT NOT NULL DEFAULT ''
);
CREATE TABLE results (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    seconds REAL,
    PRIMARY KEY (run_id, slug)
);
CREATE INDEX results_slug ON results(slug);
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None


@dataclass(frozen=True)
class MunicipalityResult:
    slug: str
    result: str  # "pending" until reported; "incomplete" when the run ended without it
    detail: str
    seconds: float | None


@dataclass(frozen=True)
class RunEntry:
    id: int
    command: str
    argv: tuple[str, ...]
    user: str
    sudo_user: str
    hostname: str
    pid: int
    started: str
    ended: str | None
    status: str  # running | ok | failed | interrupted
    exit_code: int | None
    message: str
    inventory: str
    git_commit: str | None
    git_dirty: bool | None
    artifacts: str
    results: tuple[MunicipalityResult, ...]


def git_state(inventory: Path) -> GitState:
    """HEAD commit of the repository holding *inventory*, and whether the inventory is dirty.

    No git, not a repository, or a repository git refuses to read (another owner): unknown.
    """
    where = inventory if inventory.is_dir() else inventory.parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never take the index lock

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(where), *args],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
                env=env,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("git %s: %s", args[0], exc)
            return None
        return proc.stdout if proc.returncode == 0 else None

    head = git("rev-parse", "--verify", "-q", "HEAD")
    if head is None:
        return GitState(None, None)
    status = git("status", "--porcelain", "--", str(inventory.resolve()))
    return GitState(head.strip(), None if status is None else bool(status.strip()))


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def process_start(pid: int) -> str:
    """The start time of *pid* in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 in proc(5), after "(comm)"


def pid_alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return not (started and now and now != started)


class RunRecord:
    """Handed out by :meth:`Journal.run`: record per-municipality results and artifacts."""

    def __init__(self, journal: Journal, run_id: int) -> None:
        self._journal = journal
        self.id = run_id

    def result(
        self, slug: str, result: str, detail: str = "", seconds: float | None = None
    ) -> None:
        self._journal._execute(
            "INSERT INTO results (run_id, slug, result, detail, seconds) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, slug) DO UPDATE SET result = excluded.result, "
            "detail = excluded.detail, seconds = excluded.seconds",
            (self.id, slug, result, detail, seconds),
        )

    def artifacts(self, path: Path | str) -> None:
        self._journal._execute("UPDATE runs SET artifacts = ? WHERE id = ?", (str(path), self.id))


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = StateDir(state_dir).journal
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        try:
            StateDir(self.path.parent).secure()
            db = sqlite3.connect(self.path, timeout=10.0)
            # sqlite creates the file (and its -journal/-wal, same mode) by the umask: 0600
            os.chmod(self.path, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise KallikratisError(f"cannot open the journal {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA foreign_keys = ON")
            if not self._ready:
                self._migrate(db)
                self._ready = True
        except sqlite3.Error as exc:
            db.close()
            raise KallikratisError(f"cannot open the journal {self.path}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema on first use; two first runs at once are serialised by SQLite."""
        db.execute("PRAGMA journal_mode = WAL")
        db.isolation_level = None  # explicit transaction below, DDL included
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise KallikratisError(
                    f"the journal {self.path} has schema {version}; this kallikratis knows "
                    f"{SCHEMA_VERSION}: upgrade kallikratis"
                )
            if version == 0:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.isolation_level = "DEFERRED"

    def _execute(self, sql: str, args: Sequence[object]) -> int:
        try:
            with closing(self._connect()) as db, db:
                return int(db.execute(sql, args).lastrowid or 0)
        except sqlite3.Error as exc:
            raise KallikratisError(f"cannot write the journal {self.path}: {exc}") from exc

    def start(
        self, command: str, argv: Sequence[str], inventory: Path | None, slugs: Sequence[str]
    ) -> RunRecord:
        git = git_state(inventory) if inventory else GitState(None, None)
        dirty = None if git.dirty is None else int(git.dirty)
        run_id = self._execute(
            "INSERT INTO runs (command, argv, user, sudo_user, hostname, pid, pid_start, started,"
            " status, inventory, git_commit, git_dirty) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                command,
                json.dumps(list(argv), ensure_ascii=False),
                _user(),
                os.environ.get("SUDO_USER", ""),
                socket.gethostname(),
                os.getpid(),
                process_start(os.getpid()),
                utc_now(),
                "running",
                str(inventory.resolve()) if inventory else "",
                git.commit,
                dirty,
            ),
        )
        record = RunRecord(self, run_id)
        for slug in dict.fromkeys(slugs):
            record.result(slug, "pending")
        return record

    def finish(self, record: RunRecord, status: str, exit_code: int, message: str = "") -> None:
        self._execute(
            "UPDATE runs SET ended = ?, status = ?, exit_code = ?, message = ? WHERE id = ?",
            (utc_now(), status, exit_code, message[:4000], record.id),
        )

    @contextmanager
    def run(
        self,
        command: str,
        argv: Sequence[str],
        inventory: Path | None,
        slugs: Sequence[str] = (),
    ) -> Iterator[RunRecord]:
        """Record one run; an exception inside marks it failed (or interrupted) and re-raises."""
        record = self.start(command, argv, inventory, slugs)
        try:
            yield record
        except KallikratisError as exc:
            self.finish(record, "failed", exc.exit_code, exc.message)
            raise
        except KeyboardInterrupt:
            self.finish(record, "interrupted", 130, "interrupted by the user")
            raise
        except BaseException as exc:
            self.finish(record, "failed", 1, f"{type(exc).__name__}: {exc}")
            raise
        self.finish(record, "ok", 0)

    def runs(self, name: str | None = None, limit: int = 20) -> list[RunEntry]:
        """The newest *limit* runs, or only those touching municipality *name*; newest first."""
        if not self.path.exists():  # reading never creates the journal
            return []
        query = "SELECT * FROM runs ORDER BY id DESC LIMIT ?"
        args: list[object] = [limit]
        if name is not None:
            query = (
                "SELECT * FROM runs WHERE id IN (SELECT run_id FROM results WHERE slug = ?) "
                "ORDER BY id DESC LIMIT ?"
            )
            args = [name, limit]
        try:
            with closing(self._connect()) as db:
                db.row_factory = sqlite3.Row
                rows = db.execute(query, args).fetchall()
                ids = [row["id"] for row in rows]
                marks = ",".join("?" * len(ids))
                found = db.execute(
                    f"SELECT * FROM results WHERE run_id IN ({marks}) ORDER BY rowid", ids
                ).fetchall()
        except sqlite3.Error as exc:
            raise KallikratisError(f"cannot read the journal {self.path}: {exc}") from exc
        results: dict[int, list[MunicipalityResult]] = {}
        for r in found:
            results.setdefault(r["run_id"], []).append(
                MunicipalityResult(r["slug"], r["result"], r["detail"], r["seconds"])
            )
        return [_entry(row, tuple(results.get(row["id"], ()))) for row in rows]


def _entry(row: sqlite3.Row, results: tuple[MunicipalityResult, ...]) -> RunEntry:
    status = row["status"]
    if (
        status == "running"
        and row["hostname"] == socket.gethostname()
        and not pid_alive(row["pid"], row["pid_start"])
    ):
        status = "interrupted"
    if status != "running":  # the run ended before it reported these municipalities
        results = tuple(
            MunicipalityResult(r.slug, "incomplete", r.detail, r.seconds)
            if r.result == "pending"
            else r
            for r in results
        )
    return RunEntry(
        id=row["id"],
        command=row["command"],
        argv=tuple(json.loads(row["argv"])),
        user=row["user"],
        sudo_user=row["sudo_user"],
        hostname=row["hostname"],
        pid=row["pid"],
        started=row["started"],
        ended=row["ended"],
        status=status,
        exit_code=row["exit_code"],
        message=row["message"],
        inventory=row["inventory"],
        git_commit=row["git_commit"],
        git_dirty=None if row["git_dirty"] is None else bool(row["git_dirty"]),
        artifacts=row["artifacts"],
        results=results,
    )

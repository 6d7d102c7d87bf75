"""The result store: one SQLite database (WAL mode) holding every cell of every sweep.

Each cell is one row keyed by its content id (``tta.sweep.cells.cell_id``): its status
(``running``, ``done`` or ``failed``), the resolved configuration, the command that
reruns it, who claimed it, the error of a failed attempt, the full result document,
and indexed columns for querying (setting, method, seed, stream fingerprint, errors,
cost). Claiming a cell is one ``BEGIN IMMEDIATE`` transaction on the unique id, so any
number of sweep processes can share one database without running a cell twice or
losing one; a claim whose owner process has died is taken over.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..atomic import json_safe
from ..errors import InputError, WriteError
from ..schema import check_result

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 60_000
STATUSES = ("running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    config TEXT NOT NULL,
    command TEXT,
    owner TEXT,
    claimed_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    setting TEXT,
    method TEXT,
    seed INTEGER,
    fingerprint TEXT,
    mean_error REAL,
    overall_error REAL,
    images_per_s REAL,
    wall_time_s REAL,
    peak_memory_mb REAL,
    doc TEXT
);
CREATE INDEX IF NOT EXISTS cells_status ON cells (status);
CREATE INDEX IF NOT EXISTS cells_setting ON cells (setting, method, seed);
CREATE INDEX IF NOT EXISTS cells_fingerprint ON cells (fingerprint);
"""


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is an SQLite file (a store) rather than a JSON result."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def this_owner() -> str:
    """``host:pid`` of this process, recorded with every claim."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """False only when ``owner`` is a process on this host that no longer exists."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's process: trust its claim
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """An open result database. Safe to share between processes; open one per process."""

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        """Open (or with ``create`` make) the store at ``path``; ``readonly`` opens an existing one without
        writing anything, so a store on a read-only mount can still be reported on."""
        self.path = Path(path).expanduser()
        if (readonly or not create) and not self.path.is_file():
            raise InputError(f"no result store at {self.path}; create one with `tta sweep --store {self.path} ...`")
        if self.path.exists() and self.path.stat().st_size and not is_store(self.path):
            raise InputError(f"{self.path} is not a tta result store (not SQLite); pass the --store of a tta sweep")
        if readonly:
            self.db = self._connect_readonly()
            with self.reading():
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(cells)")}
            if not {"id", "status", "command", "doc"} <= columns:
                self.db.close()
                raise InputError(f"{self.path} is SQLite but not a tta result store (no cells table); "
                                 "pass the --store of a tta sweep")
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"cannot open the store {self.path} ({exc}); pass a --store in a writable folder") from None
        with self.reading():
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")
            with self.transaction():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self.db.execute(statement)

    def _connect_readonly(self) -> sqlite3.Connection:
        # mode=ro never writes the database; a WAL store whose -shm file is absent on a read-only
        # mount cannot be opened that way, and there nobody can change it, so it is read as immutable
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            if not isinstance(exc, sqlite3.OperationalError):
                raise InputError(self._damaged(exc)) from None
        try:
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            raise InputError(self._damaged(exc)) from None

    def _damaged(self, exc: Exception) -> str:
        return (f"{self.path} is not a readable tta result store ({exc}); restore it from a copy, or rebuild it "
                "with `tta store import` from exported result files")

    @contextmanager
    def reading(self) -> Iterator[None]:
        """SQLite errors of a damaged or foreign file become one ``InputError`` line."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise InputError(f"cannot write to the store {self.path} ({exc}); it is on a read-only mount or "
                                 "file: copy it to a writable folder (reading commands open it read-only)") from None
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            if "full" in str(exc):
                raise WriteError(f"cannot write to the store {self.path} ({exc}); free space on its device, "
                                 "then rerun: finished cells are kept") from None
            raise InputError(self._damaged(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise InputError(self._damaged(exc)) from None

    def _enable_wal(self) -> None:
        # switching a fresh file to WAL ignores busy_timeout: when another process or thread opens the same new
        # store at that moment, SQLite answers "locked" at once, so wait for it here as for any other statement
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the database's write lock up front (no upgrade deadlocks)."""
        with self.reading():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- claiming and finishing cells -------------------------------------------------------

    def claim(self, cell_id: str, config: dict[str, Any], command: str, *, owner: str | None = None,
              retry_failed: bool = False) -> bool:
        """Mark the cell as ``running`` by ``owner``; False when it is done, failed (unless retried) or running elsewhere."""
        owner = owner or this_owner()
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT status, owner FROM cells WHERE id = ?", (cell_id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO cells (id, status, config, command, owner, claimed_at, attempts) "
                    "VALUES (?, 'running', ?, ?, ?, ?, 1)",
                    (cell_id, json.dumps(json_safe(config), sort_keys=True), command, owner, now),
                )
                return True
            status, holder = row
            takeover = (status == "failed" and retry_failed) or (status == "running" and not owner_alive(holder))
            if not takeover:
                return False
            db.execute(
                "UPDATE cells SET status = 'running', owner = ?, claimed_at = ?, attempts = attempts + 1, "
                "command = ? WHERE id = ?",
                (owner, now, command, cell_id),
            )
            return True

    def finish(self, cell_id: str, doc: dict[str, Any], *, setting: str) -> None:
        """Store the result document of a finished cell."""
        doc = json_safe(doc)
        m = doc["metrics"]
        with self.transaction() as db:
            db.execute(
                "UPDATE cells SET status = 'done', finished_at = ?, error = NULL, doc = ?, setting = ?, method = ?, "
                "seed = ?, fingerprint = ?, mean_error = ?, overall_error = ?, images_per_s = ?, wall_time_s = ?, "
                "peak_memory_mb = ? WHERE id = ?",
                (time.time(), json.dumps(doc), setting, doc["method"]["name"], doc["stream"]["seed"],
                 doc["stream"]["fingerprint"], m["mean_domain_error"], m["overall_error"], m["images_per_s"],
                 m["wall_time_s"], m["peak_memory_mb"], cell_id),
            )

    def fail(self, cell_id: str, error: str) -> None:
        """Record why a cell failed; it stays failed until a sweep is rerun with retries."""
        with self.transaction() as db:
            db.execute("UPDATE cells SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                       (time.time(), error, cell_id))

    def release(self, cell_ids: Iterable[str], owner: str | None = None) -> None:
        """Give back claims of an interrupted sweep so that the next one reruns those cells."""
        owner = owner or this_owner()
        with self.transaction() as db:
            db.executemany("DELETE FROM cells WHERE id = ? AND status = 'running' AND owner = ?",
                           [(i, owner) for i in cell_ids])

    def import_result(self, cell_id: str, doc: dict[str, Any], config: dict[str, Any], command: str, *,
                      setting: str) -> bool:
        """Add an existing result document as a finished cell; False when that cell is already done."""
        with self.transaction() as db:
            row = db.execute("SELECT status FROM cells WHERE id = ?", (cell_id,)).fetchone()
            if row is not None and row[0] == "done":
                return False
            db.execute(
                "INSERT OR REPLACE INTO cells (id, status, config, command, owner, claimed_at, attempts) "
                "VALUES (?, 'running', ?, ?, ?, ?, 0)",
                (cell_id, json.dumps(json_safe(config), sort_keys=True), command, "import", time.time()),
            )
        self.finish(cell_id, doc, setting=setting)
        return True

    # -- reading ------------------------------------------------------------------------------

    def statuses(self) -> dict[str, str]:
        """Cell id -> status, for every cell."""
        with self.reading():
            return dict(self.db.execute("SELECT id, status FROM cells").fetchall())

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        with self.reading():
            counts.update(dict(self.db.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall()))
        return counts

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every cell (or those with ``status``) as a dict of its columns, without the document."""
        with self.reading():
            cur = self.db.execute(
                "SELECT id, status, config, command, owner, attempts, error, setting, method, seed, fingerprint, "
                "mean_error, images_per_s FROM cells" + (" WHERE status = ?" if status else "") + " ORDER BY rowid",
                (status,) if status else (),
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def documents(self) -> list[dict[str, Any]]:
        """The result document of every finished cell, with ``_path`` naming its store row and ``_cell``.

        Each is checked against the result schema (``tta.schema``): a store is a file like any other."""
        docs = []
        with self.reading():
            rows = self.db.execute("SELECT id, command, doc FROM cells WHERE status = 'done' ORDER BY rowid").fetchall()
        for cell_id, command, doc in rows:
            where = f"{self.path}#{cell_id}"
            try:
                d = json.loads(doc)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{where}: the stored result is not JSON ({exc}); rerun that cell with "
                                 "`tta sweep --retry-failed` after deleting it, or restore the store") from None
            check_result(d, where)
            d["_path"] = where
            d["_cell"] = {"id": cell_id, "command": command}
            docs.append(d)
        return docs

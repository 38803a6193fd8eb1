"""Which tasks the background job owns and which a /predict answered moments ago, kept in SQLite so
that every gunicorn worker of one backend sees the same (one writer per task across workers).

A claim belongs to the process that made it: a job queues a task once it has claimed it, and keeps
the claim while the task is queued, in flight or stored by it; a failed task is released. Claims of
a process that is gone count for nothing, so a dead worker's tasks are served again. An answer is
`settling` for `settle_s` seconds: Label Studio stores a /predict response's predictions only after
the whole response arrived, so a second retrieval in that window may send the task again.

With one worker the table lives in memory (`path` ":memory:"); with several, `shared_claims_file`
names a file that the gunicorn master creates before the workers start.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

#: Environment variable naming the claims file all workers of one backend share.
CLAIMS_FILE_VARIABLE = "MLCDSEG_CLAIMS_FILE"
#: Seconds an answer is settling: more than Label Studio's 100 s wait for a /predict answer plus the
#: time it takes to store the answers.
SETTLE_S = 300.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (project INTEGER, task TEXT, pid INTEGER, PRIMARY KEY (project, task));
CREATE TABLE IF NOT EXISTS answered (project INTEGER, task TEXT, at REAL, PRIMARY KEY (project, task));
CREATE INDEX IF NOT EXISTS answered_at ON answered (at);
"""


def shared_claims_file(workers: int) -> str:
    """The claims file for a backend of `workers` processes: ":memory:" for one; for more, the file
    $MLCDSEG_CLAIMS_FILE names, made (and exported to the workers) by the first caller."""
    if workers <= 1:
        return ":memory:"
    path = os.environ.get(CLAIMS_FILE_VARIABLE)
    if not path:
        descriptor, path = tempfile.mkstemp(prefix="mlcdseg-claims-", suffix=".sqlite3")
        os.close(descriptor)
        os.environ[CLAIMS_FILE_VARIABLE] = path
    return path


def _key(task_id: Any) -> str:
    """A task id (int or str) as a key that keeps 1 and "1" apart."""
    return json.dumps(task_id)


def _process_alive(pid: int) -> bool:
    """True while process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TaskClaims:
    """Task claims and recent answers of one backend, per project and task id; thread-safe."""

    def __init__(self, path: str = ":memory:", settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._database = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._database.execute("PRAGMA journal_mode=WAL")
        self._database.executescript(_SCHEMA)

    def owned(self, project_id: int, task_ids: Sequence[Any]) -> set[Any]:
        """Those of `task_ids` claimed by a live process (this one included)."""
        with self._lock:
            live = self._live_claims(project_id, task_ids)
        return {task_id for task_id in task_ids if _key(task_id) in live}

    def claim(self, project_id: int, task_ids: Sequence[Any], limit: int) -> tuple[list[Any], int]:
        """Claim, in order and at most `limit`, those of `task_ids` no live process owns:
        (the ids claimed now, how many unowned ones the limit left out)."""
        with self._lock, self._transaction():
            live = self._live_claims(project_id, task_ids)
            unowned = [task_id for task_id in dict.fromkeys(task_ids) if _key(task_id) not in live]
            claimed = unowned[: max(0, limit)]
            self._database.executemany(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                [(project_id, _key(task_id), self._pid) for task_id in claimed],
            )
        return claimed, len(unowned) - len(claimed)

    def release(self, project_id: int, task_ids: Iterable[Any]) -> None:
        """Drop this process's claims on `task_ids` (failed tasks, free for a later retrieval)."""
        with self._lock, self._transaction():
            self._database.executemany(
                "DELETE FROM claims WHERE project = ? AND task = ? AND pid = ?",
                [(project_id, _key(task_id), self._pid) for task_id in task_ids],
            )

    def note_answered(self, project_id: int, task_ids: Sequence[Any]) -> None:
        """Record tasks a /predict response is about to answer: settling from now on."""
        now = time.time()
        with self._lock, self._transaction():
            self._database.execute("DELETE FROM answered WHERE at < ?", (now - self.settle_s,))
            self._database.executemany(
                "INSERT OR REPLACE INTO answered VALUES (?, ?, ?)",
                [(project_id, _key(task_id), now) for task_id in task_ids],
            )

    def settling(self, project_id: int, task_ids: Sequence[Any]) -> set[Any]:
        """Those of `task_ids` a /predict answered less than `settle_s` seconds ago."""
        since = time.time() - self.settle_s
        with self._lock:
            rows = self._rows(
                "SELECT task FROM answered WHERE project = ? AND at >= ? AND task IN ({})", (project_id, since), task_ids
            )
        recent = {task for (task,) in rows}
        return {task_id for task_id in task_ids if _key(task_id) in recent}

    def _live_claims(self, project_id: int, task_ids: Sequence[Any]) -> set[str]:
        """Keys of `task_ids` claimed by a live process (called with the lock held)."""
        rows = self._rows("SELECT task, pid FROM claims WHERE project = ? AND task IN ({})", (project_id,), task_ids)
        alive = {pid for pid in {pid for _, pid in rows} if pid == self._pid or _process_alive(pid)}  # once per process
        return {task for task, pid in rows if pid in alive}

    def _rows(self, query: str, arguments: tuple[Any, ...], task_ids: Sequence[Any]) -> list[tuple[Any, ...]]:
        """`query` with `IN ({})` filled for `task_ids`, run in chunks below SQLite's variable limit."""
        keys = list(dict.fromkeys(_key(task_id) for task_id in task_ids))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            statement = query.format(", ".join("?" * len(chunk)))
            rows += self._database.execute(statement, (*arguments, *chunk)).fetchall()
        return rows

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction that other processes wait for: committed, or rolled back on an error."""
        self._database.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._database.execute("ROLLBACK")
            raise
        self._database.execute("COMMIT")

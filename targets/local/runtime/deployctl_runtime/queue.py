"""A durable request queue in SQLite (WAL): at-least-once, idempotent submissions.

- ``submit`` stores a request and returns its id; a second submission with the same
  idempotency key returns the first one's id and runs nothing new.
- ``claim`` hands a visible message to one worker and hides it for ``visibility_timeout``
  seconds; a worker that dies mid-message leaves it to be claimed again when that expires.
- ``complete`` / ``fail`` record the outcome; a message failing ``max_attempts`` times is dead.

Standard library only: deployctl and the workers inside the deployment's environment share it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  idempotency_key TEXT UNIQUE,
  body BLOB NOT NULL,
  state TEXT NOT NULL DEFAULT 'queued',      -- queued | running | done | failed | dead
  attempts INTEGER NOT NULL DEFAULT 0,
  visible_at REAL NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  worker TEXT,
  result BLOB,
  error TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages(state, visible_at);
"""


@dataclass
class Message:
    id: str
    body: bytes
    attempts: int


class Queue:
    def __init__(self, path: str, *, visibility_timeout: float = 60.0, max_attempts: int = 5) -> None:
        self.path = path
        self.visibility_timeout = visibility_timeout
        self.max_attempts = max_attempts
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def submit(self, body: bytes, idempotency_key: str | None = None) -> tuple[str, bool]:
        """(id, created): created is False when the idempotency key was seen before."""
        now = time.time()
        mid = uuid.uuid4().hex
        cur = self.db.execute(
            "INSERT OR IGNORE INTO messages(id, idempotency_key, body, visible_at, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (mid, idempotency_key, body, now, now, now))
        if cur.rowcount == 0:
            row = self.db.execute("SELECT id FROM messages WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            return row[0], False
        return mid, True

    def claim(self, worker: str) -> Message | None:
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # Messages whose worker vanished past the visibility timeout and ran out of attempts die.
            self.db.execute(
                "UPDATE messages SET state='dead', error=coalesce(error, 'worker lost too many times'), updated_at=? "
                "WHERE state IN ('queued','running') AND visible_at <= ? AND attempts >= ?",
                (now, now, self.max_attempts))
            row = self.db.execute(
                "SELECT id, body, attempts FROM messages WHERE state IN ('queued','running') AND visible_at <= ? "
                "ORDER BY created_at LIMIT 1", (now,)).fetchone()
            if row is None:
                self.db.execute("COMMIT")
                return None
            self.db.execute(
                "UPDATE messages SET state='running', attempts=attempts+1, visible_at=?, worker=?, updated_at=? "
                "WHERE id=?", (now + self.visibility_timeout, worker, now, row[0]))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Message(row[0], row[1], row[2] + 1)

    def complete(self, mid: str, result: bytes) -> None:
        self.db.execute("UPDATE messages SET state='done', result=?, error=NULL, updated_at=? WHERE id=?",
                        (result, time.time(), mid))

    def fail(self, mid: str, error: str, attempts: int) -> None:
        """A failed attempt: retried (visible again at once) until max_attempts, then dead."""
        now = time.time()
        state = "dead" if attempts >= self.max_attempts else "queued"
        self.db.execute("UPDATE messages SET state=?, error=?, visible_at=?, updated_at=? WHERE id=?",
                        (state, error, now, now, mid))

    def get(self, mid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT id, state, attempts, result, error, created_at, updated_at FROM messages WHERE id=?",
            (mid,)).fetchone()
        if row is None:
            return None
        result = row[3]
        return {
            "request_id": row[0], "state": row[1], "attempts": row[2],
            "result": json.loads(result) if result is not None else None,
            "error": row[4], "created_at": row[5], "updated_at": row[6],
        }

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())

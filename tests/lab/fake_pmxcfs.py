"""A stand-in for pmxcfs in the lab VM (no systemd there): writes rows into a SQLite file in
WAL mode, one committed row every 50 ms, and logs each committed row to a file outside the
pool, so a test can check that no committed row was lost. Run: fake_pmxcfs.py DB LOG."""

from __future__ import annotations

import os
import sqlite3
import sys
import time


def main(db: str, logpath: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS tree (id INTEGER PRIMARY KEY, t TEXT)")
    with open(logpath, "a", encoding="utf-8") as log:  # noqa: PTH123
        while True:
            t = f"{os.getpid()}-{time.time()}"
            rid = conn.execute("INSERT INTO tree (t) VALUES (?)", (t,)).lastrowid
            log.write(f"{rid} {t}\n")
            log.flush()
            time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

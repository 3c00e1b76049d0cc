"""Checking a SQLite file before anything is served from it: read-only, an integrity check and the
expected tables; a damaged or foreign file is one line (StoreError), never repaired or created."""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from promedical.rubrics.store import BUSY_TIMEOUT_S, StoreError


def tables_of(schema: str) -> set[str]:
    return set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", schema))


def check_database(path: Path, schema: str, what: str) -> None:
    """Refuse (StoreError, one line) a file that is not an intact SQLite database holding ``schema``'s
    tables: read-only, nothing is created or repaired (``PRAGMA quick_check`` and the table names)."""
    from urllib.parse import quote

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no {what} here")
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the {what} ({exc})") from None
    try:
        found = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        if found != ["ok"]:
            raise StoreError(f"{path}: damaged {what} (integrity check: {'; '.join(map(str, found[:3]))})")
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted(tables_of(schema) - have)
        if missing:
            raise StoreError(f"{path}: not a {what} (no table {', '.join(missing)})")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: damaged or not a {what} ({exc})") from None
    finally:
        db.close()

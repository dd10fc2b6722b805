"""An append-only record of finished facts that survives Ctrl-C and kill -9.

One JSON line per fact, flushed and fsynced before the next fact starts.  A line cut short by a
crash is dropped (and truncated away) on reopening, and a fact recorded twice keeps its first
record, so a resumed run neither loses nor duplicates work.

Several processes may append to one log (shards of one run): each line is written under an
exclusive lock, and a reader takes the lock too, so it never mistakes a line being written for one
cut short (and truncates it away).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX advisory locks; where there are none, one process per log
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@contextmanager
def _exclusive(fh):
    if fcntl is None:
        yield
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def locked(path: Path):
    """Hold the exclusive lock that FactLog takes on `path` (created if missing) for a read-modify-write."""
    with Path(path).open("a", encoding="utf-8") as fh, _exclusive(fh):
        yield


class FactLog:
    """The log; records are keyed by their integer `key` field ("fact" unless told otherwise)."""

    def __init__(self, path: Path, key: str = "fact"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict = {}
        self._load()
        self._fh = None

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("a", encoding="utf-8") as lock, _exclusive(lock):
            self._read()

    def _read(self) -> None:
        good_end = 0
        with self.path.open("rb") as fh:
            data = fh.read()
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # a partial last line: the write was interrupted
            try:
                rec = json.loads(data[pos:end])
            except json.JSONDecodeError:
                break
            self.records.setdefault(self._id(rec), rec)
            pos = good_end = end + 1
        if good_end < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)

    def _id(self, rec: dict):
        value = rec[self.key]
        return int(value) if isinstance(value, (int, float)) else str(value)

    def __contains__(self, fact) -> bool:
        return fact in self.records

    def append(self, rec: dict) -> None:
        if self._id(rec) in self.records:
            return
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        with _exclusive(self._fh):
            self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self.records[self._id(rec)] = rec

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_atomic(path: Path, write) -> None:
    """`write(tmp_path)`, then rename over `path`: readers see the old file or the new, never half of one."""
    tmp = Path(str(path) + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)

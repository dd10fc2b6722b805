"""Cache entries written safely: hashed, built under a lock in a temporary sibling, renamed into place.

Everything kneuron keeps in its cache (the fact world, fetched models, converted GGUF files) is a
directory that either exists complete or not at all: it is built in `.<name>.tmp-*` beside its
final place and renamed onto it at the end, so an interrupted build leaves no half entry; a lock
file `.<name>.lock` makes a second process wait instead of building the same entry twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def entry_lock(out_dir: Path, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of the cache entry `out_dir` (waiting, with a note, if another process has it)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"another process is building {out_dir}; waiting for it ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_temps(out_dir: Path) -> None:
    """Leftovers of killed builds (the caller holds the lock, so nobody else is writing them)."""
    for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*"):
        for stale in out_dir.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def temp_sibling(out_dir: Path) -> Path:
    """A new empty directory beside `out_dir` (same file system, so the final rename is atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished build onto `out_dir`; an old entry is swapped out, then deleted."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp (and some writers) make things private: a cache is not
    for path in tmp.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A temporary directory that becomes `out_dir` if the block succeeds and vanishes if it fails.

    Call it while holding `entry_lock(out_dir)`.
    """
    remove_stale_temps(out_dir)
    tmp = temp_sibling(out_dir)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    move_into_place(tmp, out_dir)

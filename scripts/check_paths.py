#!/usr/bin/env python3
"""Fail when a committed text file holds an absolute path of some machine.

Run logs, configs, reports and pages written by kneuron record the paths they were given; checked
in as they are, they show one machine's run or home folders to every reader and point nowhere
on any other machine.  This script lists every such path in the repository's files and
exits 1 if there is one (0 otherwise), so CI can hold the line:

    python scripts/check_paths.py            # tracked files and new files not ignored by git
    python scripts/check_paths.py --tracked  # tracked files only
    python scripts/check_paths.py FILE ...   # just these files

What counts: an absolute path under a top-level directory that belongs to one machine or one
user (the names in `MACHINE_DIRS` below, and Windows' user folders), also inside `file://` URLs.
System paths (`/usr/bin`, `/etc`, `/dev`) and the paths of URLs are not machine paths.  Binary
files are skipped.

What is allowed, and why (keep this list short; a path that belongs to a run should be rewritten
relative to the repository, to `~`, or to a placeholder instead):

- placeholders: a path whose rest is `...` or `…`, as prose uses to name a kind of path;
- `ALLOW` below: a file pattern, the exact paths allowed in it, and the reason.  Code that needs a
  temporary directory must use `tempfile` (it does, everywhere), never a literal temp path.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Directories whose contents belong to one machine or one user.  Built from parts so that this
# file does not match itself.
MACHINE_DIRS = ("work", "home", "root", "tmp", "Users", "mnt", "scratch", "private/var/folders", "var/folders")
_DIRS = "|".join(re.escape(d) for d in MACHINE_DIRS)
# Not part of a longer path, a word, a URL host or `~/`: what precedes the slash must not be one of these.
_BEFORE = r"(?<![\w.~/\\-])"
_REST = r"(?:/[^\s'\"`<>()\[\]{},;|]*)?"
PATTERNS = (
    re.compile(_BEFORE + r"/(?:" + _DIRS + r")(?![\w.-])" + _REST),
    re.compile(r"file://(?:localhost)?/(?:" + _DIRS + r")(?![\w.-])" + _REST),
    re.compile(r"(?<![\w])[A-Za-z]:\\\\?(?:Users|home)\\[^\s'\"`<>]*"),
)
PLACEHOLDER = re.compile(r"^(?:file://)?/[\w/]+?/(?:\.\.\.|…)$")

# (file pattern, allowed paths (exact strings; None: any), reason)
ALLOW: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("scripts/check_paths.py", None, "this script's own documentation of what it looks for"),
)

BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".ico", ".pdf", ".parquet", ".safetensors", ".npz", ".npy",
                   ".pt", ".bin", ".gguf", ".gz", ".zip", ".whl", ".kedit", ".woff", ".woff2", ".ttf"}


def repo_files(tracked_only: bool) -> list[str]:
    args = ["git", "ls-files", "-z", "--cached"] + ([] if tracked_only else ["--others", "--exclude-standard"])
    out = subprocess.run(args, cwd=ROOT, check=True, capture_output=True).stdout
    return sorted({p for p in out.decode().split("\0") if p})


def is_text(path: Path) -> bool:
    if path.suffix.lower() in BINARY_SUFFIXES:
        return False
    with path.open("rb") as f:
        return b"\0" not in f.read(8192)


def allowed(rel: str, found: str) -> bool:
    if PLACEHOLDER.match(found):
        return True
    return any(fnmatch.fnmatch(rel, pattern) and (paths is None or found in paths) for pattern, paths, _ in ALLOW)


def check_file(rel: str) -> list[tuple[int, str, str]]:
    """(line number, path found, the line around it) for every disallowed machine path."""
    path = ROOT / rel
    if not path.is_file() or not is_text(path):
        return []
    hits = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in PATTERNS:
            for m in pattern.finditer(line):
                found = m.group(0)
                if not PLACEHOLDER.match(found):
                    found = found.rstrip(".:*")  # sentence punctuation, Markdown emphasis
                if not allowed(rel, found):
                    start = max(0, m.start() - 40)
                    hits.append((number, found, line[start:m.end() + 40].strip()))
    return hits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="files to check (default: the repository's files)")
    ap.add_argument("--tracked", action="store_true", help="only files git tracks (default: also new, unignored ones)")
    args = ap.parse_args(argv)
    files = [str(Path(f).resolve().relative_to(ROOT)) for f in args.files] if args.files else repo_files(args.tracked)
    bad = 0
    flagged = set()
    for rel in files:
        for number, found, context in check_file(rel):
            bad += 1
            flagged.add(rel)
            print(f"{rel}:{number}: {found}    [{context[:160]}]")
    if bad:
        print(f"\n{bad} absolute machine path(s) in {len(flagged)} file(s) of {len(files)} checked. Write them relative "
              "to the repository or to ~, or as a placeholder ending in ...; see the allowlist in scripts/check_paths.py.",
              file=sys.stderr)
        return 1
    print(f"no absolute machine paths in {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

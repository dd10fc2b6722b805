"""Where kneuron keeps things on disk.

The user cache (`$KNEURON_CACHE`, else `$XDG_CACHE_HOME/kneuron`, else `~/.cache/kneuron`) holds
the trained fact-world model and downloaded datasets, so that they are built or fetched once.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("KNEURON_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kneuron"


def default_data_dir() -> Path:
    """Root of the shared datasets (`$KNEURON_DATA`, else `../shared/data` beside the checkout)."""
    env = os.environ.get("KNEURON_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"

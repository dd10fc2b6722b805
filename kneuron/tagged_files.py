"""Safetensors files that say what they are: tensors plus one JSON header naming format and version.

Edits and attribution results are both saved this way, so a wrong file, a damaged one or one
from a newer kneuron is refused in one line instead of failing somewhere inside a loader.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import torch

from kneuron.errors import KneuronError


def save_tagged(path, tensors: dict[str, torch.Tensor], key: str, fmt: str, version: int, meta: dict) -> Path:
    """Write `tensors` (moved to the CPU) with `{"format": fmt, "version": version, **meta}` under `key`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": fmt, "version": version, **meta}
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path),
              metadata={key: json.dumps(header)})
    return path


def load_tagged(path, key: str, fmt: str, versions: Collection[int], what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a file written by `save_tagged` with this `fmt` and one of `versions`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise KneuronError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = json.loads((fh.metadata() or {}).get(key, "null"))
            if not isinstance(header, dict) or header.get("format") != fmt:
                raise KneuronError(f"{path}: not a kneuron {what} file")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except KneuronError:
        raise
    except Exception as exc:  # not safetensors at all, or damaged
        raise KneuronError(f"{path}: not a kneuron {what} file ({type(exc).__name__}: {exc})") from None
    if header.get("version") not in versions:
        raise KneuronError(f"{path}: {what} format version {header.get('version')}, "
                           f"this kneuron reads {', '.join(map(str, sorted(versions)))}")
    return header, tensors

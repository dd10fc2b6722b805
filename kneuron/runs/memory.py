"""How many path-point rows fit in memory: batch sizes for attribution chosen from free memory.

Integrated gradients keeps, for every path-point row, the activations that autograd saves for the
backward pass in every block above the scaled layer (and in the output head), and needs working
memory for the backward pass on top.  That is what bounds `internal_batch_size` (the most rows in
one forward/backward), and what this module estimates.  Rather than a per-family formula, it asks
the model itself, with a few attribution calls on a dummy prompt of the requested length:

- on CUDA it measures the peak (`torch.cuda.max_memory_allocated`) for two step counts at the
  top and at the bottom layer; the differences are the bytes per row, working memory included;
- elsewhere it counts the tensors saved for backward (`torch.autograd.graph.saved_tensors_hooks`,
  parameters excluded), again as a difference between two step counts, and adds working memory:
  one more block per row (the backward pass of the block it is in) and 4 vocabulary-sized fp32
  vectors (the softmax over the vocabulary and its gradients, which matter most for small models
  with large vocabularies).

Rows of the bottom layer pass through every block, so

    bytes(row of layer l) = top + (L - 1 - l) * block + working

where `top` is what a row costs in its own block plus the head and `block` what it costs in each
block above.  The engine can put all of a pass's rows on one layer (many prompts of one length),
so a batch is sized for the worst case, rows of layer 0 (`RowCost.per_row_budget`).

    rows = choose_internal_batch_size(kn, seq_len=16, steps=20)   # fits in 70% of free memory

Free memory: `torch.cuda.mem_get_info` (plus what torch's caching allocator holds unused) on CUDA,
the MPS allocator's recommended limit on Apple GPUs, and the available RAM on CPU (psutil when
installed, else /proc/meminfo, else `os.sysconf`), divided by 1.5 for the C allocator's overhead.
`KNEURON_MEMORY_FRACTION` overrides the 0.7 default fraction (the Ray backend lowers it for
workers that share a device).

`measure_peak_bytes` measures what the estimate is checked against: `torch.cuda.max_memory_allocated`
on CUDA, torch's own record of every CPU tensor allocation on CPU (see tests/test_memory.py and
benchmarks/bench_gpu.py for the measured ratios).
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kneuron.errors import KneuronError

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

DEFAULT_FRACTION = 0.7
# On CPU the process's resident memory runs up to ~1.7x the tensors' peak (allocator caching and
# fragmentation), against ~1.0-1.15x on CUDA where torch's allocator is the only one; RAM is
# therefore charged this factor on top of the fraction.
CPU_ALLOCATOR_OVERHEAD = 1.5
_CANDIDATE_WORDS = ("the", "a", "is", "of", "and", "in", ".", ",", "Paris", "city")
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


HEAD_WORKING_VECTORS = 4  # vocabulary-sized fp32 vectors of working memory per row (saved-tensor method)


@dataclass(frozen=True)
class RowCost:
    """Memory of one path-point row, for one model, prompt length and precision."""

    seq_len: int
    num_layers: int
    top: int  # saved in the row's own (scaled) block and the output head
    block: int  # saved in each block above the scaled one
    working: int = 0  # backward working memory per row (0 when `top` and `block` are measured peaks)
    method: str = "saved"  # "peak" (CUDA: measured peaks) or "saved" (saved tensors + working memory)

    def row_bytes(self, layer: int = 0) -> int:
        """Bytes charged to a row that scales `layer` (rows of layer 0 are the most expensive)."""
        return self.top + (self.num_layers - 1 - layer) * self.block + self.working

    @property
    def full(self) -> int:
        """A row of the bottom layer: the worst case."""
        return self.row_bytes(0)

    @property
    def per_row_budget(self) -> int:
        """What one row of a batch is charged when sizing batches (the worst case)."""
        return self.full

    def peak_bytes(self, steps: int, layers=None, prompts: int = 1) -> int:
        """Estimated peak of one forward/backward pass: `prompts` prompts x `steps` rows for each
        of `layers` (default all: one whole staircase)."""
        layers = range(self.num_layers) if layers is None else layers
        return prompts * steps * sum(self.row_bytes(j) for j in layers)


def _storage_key(t: torch.Tensor):
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None, 0
    return (st.device.type, st.data_ptr()), st.nbytes()


def saved_bytes(kn: KnowledgeModel, prompt: str, answer: str, steps: int, layer: int, precision: str = "fp32") -> int:
    """Bytes autograd saves for backward in one attribution call of `prompt` at one layer."""
    skip = {_storage_key(p)[0] for p in kn.model.parameters()}
    skip |= {_storage_key(b)[0] for b in kn.model.buffers()}
    seen: dict = {}

    def pack(t):
        key, nbytes = _storage_key(t)
        if key is not None and key not in skip and key[1] != 0:
            seen.setdefault(key, nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kn.attribute(prompt, answer, steps=steps, layers=[layer], internal_batch_size=steps, precision=precision)
    return sum(seen.values())


def probe_prompt(kn: KnowledgeModel, seq_len: int) -> tuple[str, str]:
    """(prompt, answer) of about `seq_len` tokens that the model accepts: a repeated one-token word."""
    from kneuron.data.facts import MASK

    word = None
    for w in _CANDIDATE_WORDS:
        try:
            kn.answer_id(w)
        except KneuronError:
            continue
        word = w
        break
    if word is None:
        raise KneuronError("cannot size batches: no single-token probe word in this tokenizer")

    def text(k: int) -> str:
        body = " ".join([word] * max(1, k))
        return f"{body} {MASK} ." if kn.is_masked else f"{body} {MASK}"

    def length(k: int) -> int:
        return len(kn.encode(text(k)).ids)

    k = max(1, seq_len - (length(1) - 1))
    for _ in range(4):  # tokenizers are close to affine in k; correct small drifts
        n = length(k)
        if n == seq_len or (n > seq_len and k == 1):
            break
        k = max(1, k + seq_len - n)
    return text(k), word


def peak_call_bytes(kn: KnowledgeModel, prompt: str, answer: str, steps: int, layer: int, precision: str = "fp32") -> int:
    """Peak CUDA memory of one attribution call of `prompt` at one layer, above what was allocated."""
    def call():
        kn.attribute(prompt, answer, steps=steps, layers=[layer], internal_batch_size=steps, precision=precision)

    return measure_peak_bytes(call, kn.device)[1]


def row_cost(kn: KnowledgeModel, seq_len: int, precision: str = "fp32", method: str | None = None) -> RowCost:
    """Bytes per path-point row for this model and prompt length (measured once, then cached).

    `method`: "peak" (default on CUDA) or "saved" (default elsewhere); see the module docstring.
    """
    seq_len = max(2, int(seq_len))
    method = method or ("peak" if kn.device.type == "cuda" else "saved")
    if method not in ("peak", "saved"):
        raise KneuronError(f"method must be 'peak' or 'saved', got {method!r}")
    per_model = _cache.setdefault(kn, {})
    key = (seq_len, precision, str(kn.device), method)
    hit = per_model.get(key)
    if hit is not None:
        return hit
    prompt, answer = probe_prompt(kn, seq_len)
    measure = peak_call_bytes if method == "peak" else saved_bytes
    a, b = 2, 6
    L = kn.num_layers

    def per_row(layer: int) -> int:
        lo = measure(kn, prompt, answer, a, layer, precision)
        hi = measure(kn, prompt, answer, b, layer, precision)
        return max(0, hi - lo) // (b - a)

    if method == "peak":
        measure(kn, prompt, answer, a, L - 1, precision)  # warm-up: kernels and caches allocate once
    top = per_row(L - 1)
    block = max(0, per_row(0) - top) // (L - 1) if L > 1 else 0
    working = 0
    if method == "saved":
        vocab = int(kn.adapter.word_embeddings(kn.model).shape[0])
        working = block + HEAD_WORKING_VECTORS * vocab * 4
    cost = RowCost(seq_len, L, top, block, working, method)
    per_model[key] = cost
    return cost


def rough_row_bytes(kn: KnowledgeModel, seq_len: int) -> int:
    """A cheap upper bound of `bytes_per_row` from the shapes alone (no model run).

    Per block and token a row saves at most ~12 hidden-size and ~4 neuron-count vectors (BERT
    measures ~10 and 2, gated MLPs ~4 neuron vectors); the head needs at most ~8 vocabulary-size
    vectors.
    """
    hidden = int(kn.adapter.word_embeddings(kn.model).shape[1])
    vocab = int(kn.adapter.word_embeddings(kn.model).shape[0])
    item = 4  # fp32 (autocast and half weights only make it smaller)
    per_block = seq_len * (12 * hidden + 4 * kn.num_neurons) * item
    return (kn.num_layers + 1) * per_block + 8 * vocab * item


def bytes_per_row(kn: KnowledgeModel, seq_len: int, precision: str = "fp32") -> int:
    """Worst-case bytes one path-point row keeps for backward (a row scaling the bottom layer)."""
    return row_cost(kn, seq_len, precision).full


# -- free memory --------------------------------------------------------------------------------------

def available_ram() -> int:
    """Bytes of RAM available to new allocations (psutil, /proc/meminfo, then sysconf free pages)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown platform: assume a modest 4 GiB


def free_memory(device) -> int:
    """Bytes that attribution may still allocate on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # The caching allocator keeps freed blocks reserved; they are free for torch's next tensors.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return available_ram()
    return available_ram()


def _default_fraction() -> float:
    env = os.environ.get("KNEURON_MEMORY_FRACTION")
    if not env:
        return DEFAULT_FRACTION
    try:
        value = float(env)
    except ValueError:
        raise KneuronError(f"KNEURON_MEMORY_FRACTION must be a number in (0, 1], got {env!r}") from None
    if not 0 < value <= 1:
        raise KneuronError(f"KNEURON_MEMORY_FRACTION must be in (0, 1], got {value}")
    return value


def choose_internal_batch_size(kn: KnowledgeModel, seq_len: int, steps: int, free_bytes: int | None = None,
                               fraction: float | None = None, precision: str = "fp32",
                               max_rows: int | None = None) -> int:
    """Most path-point rows per forward/backward that fit in `fraction` of the free memory.

    A multiple of `steps` (the engine never splits one layer's path points), at least `steps`,
    at most `max_rows` when given.  `fraction` defaults to 0.7 (or `$KNEURON_MEMORY_FRACTION`);
    `free_bytes` defaults to what `free_memory(kn.device)` reports.
    """
    if steps < 1:
        raise KneuronError(f"steps must be >= 1, got {steps}")
    fraction = _default_fraction() if fraction is None else float(fraction)
    if not 0 < fraction <= 1:
        raise KneuronError(f"fraction must be in (0, 1], got {fraction}")
    cost = row_cost(kn, seq_len, precision)
    if free_bytes is None:
        free_bytes = free_memory(kn.device)
        if kn.device.type == "cpu":
            free_bytes = int(free_bytes / CPU_ALLOCATOR_OVERHEAD)
    per_row = max(1, cost.per_row_budget)
    rows = int(fraction * free_bytes) // per_row
    rows = max(steps, rows // steps * steps)
    if max_rows is not None:
        rows = max(steps, min(rows, max_rows // steps * steps))
    return rows


# On CPU a pass of a few hundred rows already runs the matmuls at full speed; more rows only cost
# memory.  So one causal pass is held to this much (estimated) memory, whatever RAM is free.
CPU_PASS_BYTES = 2 << 30


def causal_rows(kn: KnowledgeModel, seq_len: int, answer_tokens: int, steps: int, precision: str = "fp32",
                free_bytes: int | None = None) -> int:
    """Path-point rows per pass for one causal-LM prompt of `seq_len` tokens whose answer has
    `answer_tokens` tokens (the positions every row carries).

    The bytes of a row are measured (`row_cost`) once per model for prompt lengths rounded up to
    a power of two (>= 16), charged per answer token; the budget is `fraction` of free memory
    (as for `choose_internal_batch_size`), and on CPU at most `CPU_PASS_BYTES`.
    """
    bucket = max(16, 1 << (max(1, seq_len) - 1).bit_length())
    per_row = max(1, row_cost(kn, bucket, precision).per_row_budget * max(1, answer_tokens))
    if free_bytes is None:
        free_bytes = free_memory(kn.device)
        if kn.device.type == "cpu":
            free_bytes = int(free_bytes / CPU_ALLOCATOR_OVERHEAD)
    budget = int(_default_fraction() * free_bytes)
    if kn.device.type == "cpu":
        budget = min(budget, CPU_PASS_BYTES)
    return max(steps, budget // per_row // steps * steps)


def measure_peak_bytes(fn, device="cpu") -> tuple[object, int]:
    """(fn(), peak bytes of tensors allocated while it ran above what was allocated before).

    CUDA: `torch.cuda.max_memory_allocated`.  CPU: torch's profiler memory record (every tensor
    allocation and free on the CPU allocator), replayed to find the peak; slower, but exact.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        if e.device_type() != torch.autograd.DeviceType.CPU:
            continue
        current += e.nbytes()
        peak = max(peak, current)
    return out, int(peak)

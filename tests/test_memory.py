"""Memory: batch sizes from free memory, the estimate against measured peaks, no autograd graph left
behind by attribution, device auto-selection."""

import gc
import warnings
import weakref

import pytest
import torch
from tiny_models import save_tiny_bert

import kneuron
from kneuron.errors import KneuronError, ModelError
from kneuron.models import loading
from kneuron.runs import memory


@pytest.fixture(scope="module")
def kn(tmp_path_factory):
    path = save_tiny_bert(tmp_path_factory.mktemp("mem") / "model", layers=3, hidden=64, intermediate=256)
    return kneuron.load(str(path), device="cpu")


def test_row_cost_grows_with_length_and_depth(kn):
    short, long = memory.row_cost(kn, 12), memory.row_cost(kn, 24)
    assert short.top > 0 and short.block > 0 and short.num_layers == kn.num_layers
    assert 1.7 < long.block / short.block < 2.3  # saved activations are linear in the tokens
    assert short.row_bytes(0) > short.row_bytes(1) > short.row_bytes(2) == short.top + short.working
    assert memory.bytes_per_row(kn, 12) == short.full
    assert memory.row_cost(kn, 12) is short  # measured once per model and length
    assert memory.rough_row_bytes(kn, 12) >= short.full  # the cheap bound is an upper bound


def test_probe_prompt_has_the_requested_length(kn):
    for n in (6, 12, 30):
        prompt, answer = memory.probe_prompt(kn, n)
        assert len(kn.encode(prompt).ids) == n
        kn.answer_id(answer)


def test_choose_internal_batch_size(kn):
    cost = memory.row_cost(kn, 16)
    steps = 20
    free = 10_000 * cost.per_row_budget
    rows = memory.choose_internal_batch_size(kn, 16, steps, free_bytes=free, fraction=0.5)
    assert rows % steps == 0 and rows == 5000 // steps * steps
    assert memory.choose_internal_batch_size(kn, 16, steps, free_bytes=free, fraction=1.0) == 10_000
    assert memory.choose_internal_batch_size(kn, 16, steps, free_bytes=1) == steps  # never below one layer's points
    assert memory.choose_internal_batch_size(kn, 16, steps, free_bytes=free, max_rows=65) == 60
    assert memory.choose_internal_batch_size(kn, 64, steps, free_bytes=free) < \
        memory.choose_internal_batch_size(kn, 16, steps, free_bytes=free)
    # Defaults: the machine's free RAM, fraction 0.7 or $KNEURON_MEMORY_FRACTION.
    auto = memory.choose_internal_batch_size(kn, 16, steps)
    assert auto >= steps and auto % steps == 0
    with pytest.raises(KneuronError, match="fraction"):
        memory.choose_internal_batch_size(kn, 16, steps, fraction=1.5)
    with pytest.raises(KneuronError, match="steps"):
        memory.choose_internal_batch_size(kn, 16, 0)


def test_memory_fraction_from_environment(kn, monkeypatch):
    free = 1000 * memory.row_cost(kn, 16).per_row_budget
    monkeypatch.setenv("KNEURON_MEMORY_FRACTION", "0.2")
    assert memory.choose_internal_batch_size(kn, 16, 10, free_bytes=free) == 200
    monkeypatch.setenv("KNEURON_MEMORY_FRACTION", "nope")
    with pytest.raises(KneuronError, match="KNEURON_MEMORY_FRACTION"):
        memory.choose_internal_batch_size(kn, 16, 10, free_bytes=free)


def test_free_memory_on_cpu():
    ram = memory.available_ram()
    assert 0 < ram < 1 << 50
    assert memory.free_memory("cpu") == pytest.approx(ram, rel=0.2)


def test_estimate_against_measured_peak(kn):
    """The estimate of one pass against torch's record of every CPU tensor allocation."""
    steps = 20
    for seq_len in (12, 24):
        cost = memory.row_cost(kn, seq_len)
        measured = memory.row_cost(kn, seq_len, method="peak")  # what CUDA uses, here from the CPU record
        assert measured.method == "peak" and measured.working == 0
        assert 0.7 < measured.full / cost.full < 1.2, (measured, cost)
        prompt, answer = memory.probe_prompt(kn, seq_len)
        # Worst case (what batches are sized for): 3 prompts x 20 rows, all scaling the bottom layer.
        _, peak = memory.measure_peak_bytes(lambda p=prompt, a=answer: kn.attribute(
            [p] * 3, a, steps=steps, layers=[0], internal_batch_size=3 * steps))
        ratio = peak / cost.peak_bytes(steps, layers=[0], prompts=3)
        assert 0.7 < ratio < 1.3, ratio
        # One whole staircase (the CPU default): the estimate errs on the safe side.
        _, peak = memory.measure_peak_bytes(lambda p=prompt, a=answer: kn.attribute(p, a, steps=steps))
        ratio = peak / cost.peak_bytes(steps)
        assert 0.5 < ratio < 1.3, ratio


def test_default_internal_batch_size(kn, monkeypatch):
    assert kn.default_internal_batch_size(20) == 20 * kn.num_layers  # plenty of RAM: one staircase
    cost = memory.row_cost(kn, 64)
    # Short of RAM: fewer rows, still a multiple of the steps.
    monkeypatch.setattr(memory, "available_ram", lambda: int(45 * cost.per_row_budget * memory.CPU_ALLOCATOR_OVERHEAD))
    assert kn.default_internal_batch_size(10) == 30
    # The engine uses it: results do not depend on the batch size.
    full = kn.attribute("The capital of Ireland is [MASK].", "Dublin", steps=10, internal_batch_size=10 * kn.num_layers)
    small = kn.attribute("The capital of Ireland is [MASK].", "Dublin", steps=10)
    assert torch.allclose(full.scores, small.scores, rtol=1e-5, atol=1e-9)


# -- no autograd graph outlives an attribution call ----------------------------------------------------

def _graph_tensors() -> int:
    """Live tensors that require grad or hang on a graph (parameters are frozen: none expected)."""
    gc.collect()
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and (obj.requires_grad or obj.grad_fn is not None):
                    n += 1
            except ReferenceError:
                pass
    return n


def test_no_graph_outlives_attribution(kn, monkeypatch):
    prompts = ["The capital of Ireland is [MASK].", "Paris is in [MASK] .", "Rome is the capital of [MASK] ."]
    kn.attribute(prompts, "Dublin")  # warm caches
    before = _graph_tensors()
    leaves, saved = [], []
    model_storage = {t.untyped_storage().data_ptr() for t in [*kn.model.parameters(), *kn.model.buffers()]}
    real = torch.Tensor.requires_grad_

    def spy(self, requires_grad=True):
        out = real(self, requires_grad)
        leaves.append(weakref.ref(out))
        return out

    def pack(t):
        if t.untyped_storage().data_ptr() not in model_storage:  # weights are saved too, and stay
            saved.append(weakref.ref(t))
        return t

    monkeypatch.setattr(torch.Tensor, "requires_grad_", spy)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        results = kn.attribute(prompts, "Dublin")
    monkeypatch.undo()
    gc.collect()
    assert leaves and saved  # the spies saw the path points and the activations saved for backward
    assert all(r() is None for r in leaves), "a path-point leaf outlived the call"
    assert all(r() is None for r in saved), "an activation saved for backward outlived the call"
    for res in results:
        for t in (res.scores, res.activations, res.convergence_delta):
            if t is not None:
                assert not t.requires_grad and t.grad_fn is None
    assert _graph_tensors() == before
    assert not any(p.grad is not None for p in kn.model.parameters())


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_flat_over_repeated_calls(kn):
    prompt = "The capital of Ireland is [MASK]."
    for _ in range(5):
        kn.attribute(prompt, "Dublin")
    gc.collect()
    start = _rss()
    for _ in range(30):
        kn.attribute(prompt, "Dublin")
    gc.collect()
    grown = _rss() - start
    # One leaked graph here is ~1.2 MB (a 3-layer staircase); 30 would be ~36 MB.
    assert grown < 12 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 30 calls"


# -- devices ---------------------------------------------------------------------------------------

def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loading, "_mps_available", lambda: False)
    assert loading.resolve_device("auto") == torch.device("cpu")
    assert loading.resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(loading, "_mps_available", lambda: True)
    assert loading.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loading.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="CUDA is not available"):
        loading.resolve_device("cuda:0")
    with pytest.raises(ModelError, match="unknown device"):
        loading.resolve_device("tpu7")
    assert loading.resolve_device("cpu") == torch.device("cpu")


def test_gpu_paths_use_free_memory(monkeypatch):
    """The CUDA wiring, without a GPU: discovery and the engine's default size batches from free memory."""
    from types import SimpleNamespace

    from kneuron.knowledge_model import KnowledgeModel
    from kneuron.runs.config import DiscoveryConfig
    from kneuron.runs.fact_records import internal_batch_size as _internal_batch_size

    cost = memory.RowCost(seq_len=16, num_layers=4, top=1000, block=500, method="peak")
    seen = []

    def fake_row_cost(kn, seq_len, precision="fp32", method=None):
        seen.append((seq_len, precision))
        return cost

    monkeypatch.setattr(memory, "row_cost", fake_row_cost)
    monkeypatch.setattr(memory, "free_memory", lambda device: 1_000_000)
    fake = SimpleNamespace(device=torch.device("cuda"), num_layers=4,
                           encode=lambda p: SimpleNamespace(ids=tuple(range(len(p.split())))))
    # 0.7 * 1e6 / 2500 bytes per row = 280 rows -> a multiple of 20
    assert KnowledgeModel.default_internal_batch_size(fake, 20) == 280
    assert seen[-1] == (64, "fp32")
    rows = _internal_batch_size(fake, ["a b c", "a b c d e f g"], DiscoveryConfig(steps=20, precision="bf16"))
    assert rows == 280 and seen[-1] == (7, "bf16")  # sized for the batch's longest prompt
    fake.device = torch.device("cpu")
    assert _internal_batch_size(fake, ["a b"], DiscoveryConfig()) is None  # CPU: the engine's default


def test_causal_rows_follow_length_answer_and_budget(llama):
    kn = llama
    free = 4 * memory.row_cost(kn, 64).full * 20 * kn.num_layers  # room for 4 staircases of 64 tokens
    short = memory.causal_rows(kn, 10, 1, 20, free_bytes=free * 10)
    long = memory.causal_rows(kn, 60, 1, 20, free_bytes=free)
    assert short % 20 == 0 and long % 20 == 0
    assert long < short
    assert memory.causal_rows(kn, 60, 4, 20, free_bytes=free) < long  # every row carries each answer token
    assert memory.causal_rows(kn, 60, 1, 20, free_bytes=1) == 20  # never fewer than one layer's points
    huge = memory.causal_rows(kn, 10, 1, 20, free_bytes=1 << 50)  # the CPU cap, not the free RAM
    assert huge * memory.row_cost(kn, 16).full <= memory.CPU_PASS_BYTES


def test_causal_batches_do_not_change_scores(llama, monkeypatch):
    prompt = "The capital of Ireland is [MASK]"
    whole = llama.attribute(prompt, "Dublin", steps=4, internal_batch_size=4 * llama.num_layers).scores
    monkeypatch.setattr(memory, "CPU_PASS_BYTES", 1)  # the default sizing now runs one layer per pass
    small = llama.attribute(prompt, "Dublin", steps=4).scores
    assert torch.allclose(whole, small, rtol=1e-5, atol=1e-8)

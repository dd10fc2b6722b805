"""Attribution throughput and peak memory per prompt, on a GPU where there is one (CPU otherwise).

    python benchmarks/bench_gpu.py                       # CUDA: BERT-base shape + a ~1.1B Llama-shaped decoder
    python benchmarks/bench_gpu.py --device cpu          # CPU: small shapes (runs anywhere, for testing)
    python benchmarks/bench_gpu.py --decoder-config cfg.json --cases decoder --json out.json

Random weights (shapes are what matter for speed and memory).  For each model it reports:
- prompts/s attributing one prompt at a time, and in a batch sized from free memory (what
  `kneuron discover` does: `kneuron.runs.memory.choose_internal_batch_size`);
- peak memory per prompt above the weights: `torch.cuda.max_memory_allocated` on CUDA, torch's
  own allocation record on CPU (`kneuron.runs.memory.measure_peak_bytes`), next to the estimate
  that batch sizes are chosen from (`RowCost.peak_bytes`) and their ratio;
- agreement with fp32 of TF32 matmuls (CUDA only; a no-op on CPU) and bf16 autocast: shared
  top-20 neurons, coarse knowledge-neuron sets (threshold 0.2) and max relative difference;
- the time of the full PARAREL run (253,448 prompts) on one such device at the batched rate
  (the paper: about 102 GPU-hours on a V100, 13.3 s per fact).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

PARAREL_PROMPTS = 253_448
PAPER_GPU_HOURS = 102

PROMPTS = [
    ("The capital of Ireland is [MASK].", "Dublin"),
    ("Dublin is the capital city of the country called [MASK].", "Ireland"),
    ("Paris is a city located in [MASK].", "France"),
    ("The official language of France is [MASK].", "French"),
    ("Rome is the capital of [MASK].", "Italy"),
    ("Berlin is a city in the country of [MASK].", "Germany"),
    ("Edmonton is the capital of the province of [MASK].", "Alberta"),
    ("The river Liffey flows through the city of [MASK].", "Dublin"),
    ("The Colosseum stands in the city of [MASK].", "Rome"),
    ("People in Berlin mostly speak [MASK].", "German"),
    ("The Eiffel Tower is in [MASK].", "Paris"),
    ("The capital of Germany is [MASK].", "Berlin"),
]

# name -> (family, config kwargs).  "~1.1B" is TinyLlama-1.1B's shape.
SHAPES = {
    "bert-base": ("bert", dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072)),
    "bert-small": ("bert", dict(vocab_size=28996, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                intermediate_size=1024)),
    "llama-1b": ("llama", dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                               num_key_value_heads=4, intermediate_size=5632, max_position_embeddings=2048)),
    "llama-small": ("llama", dict(vocab_size=32000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=688, max_position_embeddings=512)),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def masked_tokenizer(tmp: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import write_wordpiece_vocab
    from transformers import BertTokenizerFast

    vocab = tmp / "vocab.txt"
    write_wordpiece_vocab(vocab)
    words = {w for p, a in PROMPTS for w in p.replace("[MASK]", "").replace(".", " ").split()} | {a for _, a in PROMPTS}
    lines = vocab.read_text().splitlines()
    vocab.write_text("\n".join(lines + sorted(words - set(lines))) + "\n")
    return BertTokenizerFast.from_pretrained(str(tmp), do_lower_case=False)


def causal_tokenizer(tmp: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [p.replace("[MASK]", a) for p, a in PROMPTS] * 50
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>", "<pad>"])
    bpe.save(str(tmp / "bpe.json"))
    return PreTrainedTokenizerFast(tokenizer_file=str(tmp / "bpe.json"), bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<pad>")


def build(shape: str, family: str, overrides: dict, device: torch.device, dtype: torch.dtype):
    """A KnowledgeModel with random weights, built directly on the device (no checkpoint on disk)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    from kneuron.knowledge_model import KnowledgeModel
    from kneuron.models.adapters import adapter_for_type

    adapter = adapter_for_type(family)
    if adapter is None:
        raise RuntimeError(f"kneuron has no adapter for {family!r} yet")
    tmp = Path(tempfile.mkdtemp())
    tok = masked_tokenizer(tmp) if adapter.objective == "masked" else causal_tokenizer(tmp)
    cfg = AutoConfig.for_model(family, **overrides)
    auto = AutoModelForMaskedLM if adapter.objective == "masked" else AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = auto.from_config(cfg).to(dtype)
    model.eval().requires_grad_(False)
    kn = KnowledgeModel(model, tok, adapter, name=shape)
    params = sum(p.numel() for p in model.parameters())
    return kn, params, cfg


def usable_prompts(kn, n: int):
    out = []
    for prompt, answer in PROMPTS:
        if not kn.is_masked:
            prompt = prompt.replace(" [MASK].", " [MASK]")
        try:
            kn.answer_id(answer)
            kn.encode(prompt)
        except Exception:
            continue
        out.append((prompt, answer))
    return (out * (n // max(1, len(out)) + 1))[:n]


def agreement(ref, other) -> dict:
    from kneuron.selection import coarse_neurons

    top, jac, rel = [], [], []
    for a, b in zip(ref, other):
        ta = set(torch.topk(a.scores.flatten(), 20).indices.tolist())
        tb = set(torch.topk(b.scores.flatten(), 20).indices.tolist())
        top.append(len(ta & tb) / 20)
        ca = {(n.layer, n.index) for n in coarse_neurons(a.scores, 0.2)}
        cb = {(n.layer, n.index) for n in coarse_neurons(b.scores, 0.2)}
        jac.append(len(ca & cb) / max(1, len(ca | cb)))
        rel.append(float((a.scores - b.scores).abs().max() / a.scores.abs().max().clamp_min(1e-30)))
    return {"top20_shared": sum(top) / len(top), "coarse_jaccard": sum(jac) / len(jac), "max_rel_diff": max(rel)}


def bench_case(name: str, family: str, overrides: dict, args, device: torch.device) -> dict:
    from kneuron.runs.memory import choose_internal_batch_size, free_memory, measure_peak_bytes, row_cost

    t0 = time.perf_counter()
    kn, params, cfg = build(name, family, overrides, device, torch.float32)
    build_s = time.perf_counter() - t0
    pairs = usable_prompts(kn, args.prompts)
    if not pairs:
        raise RuntimeError("no prompt fits this tokenizer")
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    steps = args.steps
    tokens = sum(len(kn.encode(p).ids) for p in prompts) / len(prompts)
    longest = max(len(kn.encode(p).ids) for p in prompts)
    print(f"\n== {name}: {family}, {params / 1e6:.0f}M parameters, {kn.num_layers} layers x {kn.num_neurons} neurons, "
          f"{len(prompts)} prompts of {tokens:.1f} tokens on average, steps={steps}, device={device} "
          f"(built in {build_s:.1f} s)")

    kn.attribute(prompts[0], answers[0], steps=steps)  # warm-up (kernels, allocator, caches)
    sync(device)

    # One prompt at a time, with its peak memory.
    cost = row_cost(kn, round(tokens))
    t = time.perf_counter()
    single = []
    peaks = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if i < args.peak_prompts:
            res, peak = measure_peak_bytes(lambda p=p, a=a: kn.attribute(p, a, steps=steps), device)
            peaks.append(peak)
        else:
            res = kn.attribute(p, a, steps=steps)
        single.append(res)
    sync(device)
    t_single = time.perf_counter() - t
    estimate = cost.peak_bytes(steps, layers=range(min(kn.num_layers, kn.default_internal_batch_size(steps) // steps)))

    # Batched, the batch sized from free memory as discovery does.
    rows = choose_internal_batch_size(kn, longest, steps)
    if device.type == "cpu":
        rows = min(rows, kn.default_internal_batch_size(steps))
    sync(device)
    t = time.perf_counter()
    batched, batch_peak = measure_peak_bytes(
        lambda: kn.attribute(prompts, answers, steps=steps, internal_batch_size=rows), device) \
        if device.type == "cuda" else (kn.attribute(prompts, answers, steps=steps, internal_batch_size=rows), None)
    sync(device)
    t_batched = time.perf_counter() - t
    # (on CPU the profiler would slow the timed batched call; its peak is measured separately)
    if batch_peak is None and args.peak_prompts:
        _, batch_peak = measure_peak_bytes(
            lambda: kn.attribute(prompts[:4], answers[:4], steps=steps, internal_batch_size=rows), device)
        batch_prompts = min(4, len(prompts))
    else:
        batch_prompts = len(prompts)

    n = len(prompts)
    rate_single, rate_batched = n / t_single, n / t_batched
    best = max(rate_single, rate_batched)
    row = {
        "model": name, "family": family, "parameters": params, "device": str(device), "steps": steps,
        "prompts": n, "tokens_avg": tokens, "prompts_per_s_single": rate_single,
        "prompts_per_s_batched": rate_batched, "internal_batch_size": rows,
        "free_memory_gib": free_memory(device) / 2**30,
        "peak_mib_per_prompt_single": (sum(peaks) / len(peaks) / 2**20) if peaks else None,
        "estimated_peak_mib_single": estimate / 2**20,
        "peak_mib_per_prompt_batched": (batch_peak / batch_prompts / 2**20) if batch_peak else None,
        "bytes_per_row_worst_case_mib": cost.per_row_budget / 2**20,
        "pararel_hours": PARAREL_PROMPTS / best / 3600,
    }
    if peaks:
        row["peak_over_estimate"] = (sum(peaks) / len(peaks)) / estimate
    print(f"  one prompt at a time: {rate_single:8.2f} prompts/s   peak {row['peak_mib_per_prompt_single'] or 0:9.1f} MiB/prompt"
          f" (estimate {row['estimated_peak_mib_single']:.1f} MiB, measured/estimate "
          f"{row.get('peak_over_estimate', float('nan')):.2f})")
    print(f"  batched ({rows} rows):  {rate_batched:8.2f} prompts/s   peak "
          f"{row['peak_mib_per_prompt_batched'] or 0:9.1f} MiB/prompt  ({row['free_memory_gib']:.1f} GiB free)")
    print(f"  full PARAREL ({PARAREL_PROMPTS:,} prompts) on one such device: {row['pararel_hours']:.1f} h "
          f"(paper: ~{PAPER_GPU_HOURS} h on a V100)")

    # Reduced precision against fp32, on the first few prompts.
    k = min(args.agreement_prompts, n)
    variants = {}
    if device.type == "cuda":
        from kneuron.runs.backends import torch_settings

        with torch_settings(tf32=True):
            t = time.perf_counter()
            variants["tf32"] = (kn.attribute(prompts[:k], answers[:k], steps=steps, internal_batch_size=rows), t)
            sync(device)
            variants["tf32"] = (variants["tf32"][0], time.perf_counter() - t)
    else:
        print("  tf32: no effect on CPU (skipped)")
    t = time.perf_counter()
    out = kn.attribute(prompts[:k], answers[:k], steps=steps, internal_batch_size=rows, precision="bf16")
    sync(device)
    variants["bf16"] = (out, time.perf_counter() - t)
    t = time.perf_counter()
    ref = kn.attribute(prompts[:k], answers[:k], steps=steps, internal_batch_size=rows)
    sync(device)
    t_ref = time.perf_counter() - t
    for label, (res, secs) in variants.items():
        agree = agreement(ref, res)
        row[f"{label}_vs_fp32"] = {**agree, "speedup": t_ref / secs}
        print(f"  {label} vs fp32: top-20 shared {100 * agree['top20_shared']:.0f}%, coarse-set Jaccard "
              f"{agree['coarse_jaccard']:.2f}, max relative difference {agree['max_rel_diff']:.1e}, "
              f"speed-up {t_ref / secs:.2f}x")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--cases", default="bert,decoder", help="comma-separated: bert, decoder")
    ap.add_argument("--bert", default=None, help="BERT shape (default: bert-base on GPU, bert-small on CPU)")
    ap.add_argument("--decoder", default=None, help="decoder shape name (default: llama-1b on GPU, llama-small on CPU)")
    ap.add_argument("--decoder-config", default=None,
                    help="decoder config instead: a JSON file or string with model_type and config keys")
    ap.add_argument("--prompts", type=int, default=None, help="prompts timed (default 12 on GPU, 4 on CPU)")
    ap.add_argument("--peak-prompts", type=int, default=2, help="prompts whose peak memory is measured")
    ap.add_argument("--agreement-prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    from kneuron.models.loading import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    args.prompts = args.prompts or (12 if gpu else 4)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    if not gpu:
        print("no CUDA device: small shapes; peak memory is torch's CPU allocation record (plus peak RSS at the end)")

    cases = []
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    if "bert" in wanted:
        shape = args.bert or ("bert-base" if gpu else "bert-small")
        cases.append((shape, *SHAPES[shape]))
    if "decoder" in wanted:
        if args.decoder_config:
            text = args.decoder_config
            cfg = json.loads(Path(text).read_text() if Path(text).exists() else text)
            family = cfg.pop("model_type")
            cases.append((f"{family}-custom", family, cfg))
        else:
            shape = args.decoder or ("llama-1b" if gpu else "llama-small")
            cases.append((shape, *SHAPES[shape]))

    rows = []
    for shape, family, overrides in cases:
        try:
            rows.append(bench_case(shape, family, overrides, args, device))
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the case's model is gone; give its memory back
        except Exception as exc:  # a family kneuron cannot run yet: say so, go on
            print(f"\n== {shape}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    print(f"\npeak RSS of this process: {peak_rss_mib():.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "device_name": name, "results": rows},
                                              indent=2) + "\n")
        print(f"results -> {args.json}")


if __name__ == "__main__":
    main()

"""Attribution speed: kneuron's exact fast path against the slow reference and EleutherAI's
`knowledge-neurons` 0.0.2 `get_scores`, on a BERT-base-shaped model (random weights), in one process.

    python benchmarks/bench_attribution.py [--threads 1] [--prompts 4] [--repeats 1] [--small]

Prints seconds per prompt, prompts per second, speed-up ratios, the agreement of the scores
(max relative difference) and the fraction of the machine's fp32 matmul throughput achieved.
EleutherAI's tool uses other path points (linspace 0..1, 20 points), so only its speed is compared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPTS = [
    "The capital of Ireland is [MASK].",
    "Dublin is the capital city of the country called [MASK] .",
    "Paris is a city in [MASK].",
    "The official language of France is [MASK] , as everyone in Paris speaks it .",
    "Rome was born in [MASK].",
    "Berlin is the capital of [MASK].",
    "The river in Dublin is in the country of [MASK] .",
    "Edmonton is the capital of [MASK].",
]


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def model_flops_per_prompt(cfg, tokens: int, steps: int) -> float:
    """Useful work of exact IG: per layer l, the blocks above l (+ the head on one row), forward and backward."""
    h, f, L, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    per_block = tokens * (4 * h * h + 2 * h * f) * 2  # multiply-adds -> flops
    head = (h * h + h * v) * 2
    total = 0.0
    for layer in range(L):
        above = L - 1 - layer
        total += steps * (above * per_block + tokens * h * f * 2 + head) * 2  # forward + backward
    return total


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=2, help="prompts timed per implementation")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="a 4-layer, 256-wide model for a quick run")
    ap.add_argument("--no-eleuther", action="store_true")
    ap.add_argument("--no-padded", action="store_true",
                    help="skip the authors' loop padded to 128 tokens (what the released code runs; slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from tiny_models import write_wordpiece_vocab
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    import kneuron
    from kneuron.attribution.reference import reference_attribution

    tmp = Path(tempfile.mkdtemp())
    write_wordpiece_vocab(tmp / "vocab.txt")
    tok = BertTokenizerFast.from_pretrained(str(tmp), do_lower_case=False)
    if args.small:
        cfg = BertConfig(vocab_size=28996, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=1024)
    else:  # bert-base-cased's shape
        cfg = BertConfig(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072)
    torch.manual_seed(0)
    BertForMaskedLM(cfg).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    kn = kneuron.load(str(tmp), device="cpu")
    prompts = PROMPTS[: args.prompts]
    answer = "Dublin"
    tokens = sum(len(kn.encode(p).ids) for p in prompts) / len(prompts)
    print(f"model: BERT-base shape ({cfg.num_hidden_layers} layers, {cfg.hidden_size} hidden, "
          f"{cfg.intermediate_size} neurons/layer), {args.threads} thread(s), {len(prompts)} prompts, "
          f"{tokens:.1f} tokens on average, steps={args.steps}")

    rows = []
    fast_res = {}

    def run_fast():
        for p in prompts:
            fast_res[p] = kn.attribute(p, answer, steps=args.steps)

    def run_fast_batched():
        kn.attribute(prompts, [answer] * len(prompts), steps=args.steps)

    bf16_res = {}

    def run_bf16():
        for p in prompts:
            bf16_res[p] = kn.attribute(p, answer, steps=args.steps, precision="bf16")

    ref_res = {}

    def run_ref():
        for p in prompts:
            ref_res[p] = reference_attribution(kn, p, answer, steps=args.steps)[0]

    t_fast = timed(run_fast, args.repeats)
    rows.append(("kneuron (fp32, exact)", t_fast))
    t_batched = timed(run_fast_batched, args.repeats)
    rows.append(("kneuron, prompts batched", t_batched))
    t_bf16 = timed(run_bf16, args.repeats)
    rows.append(("kneuron (bf16 autocast, opt-in)", t_bf16))
    t_ref = timed(run_ref, args.repeats)
    rows.append(("slow reference (authors' loop)", t_ref))
    err = max(float((fast_res[p].scores - ref_res[p]).abs().max() / ref_res[p].abs().max()) for p in prompts)

    t_padded = None
    if not args.no_padded:
        pad_res = {}

        def run_padded():
            for p in prompts:
                pad_res[p] = reference_attribution(kn, p, answer, steps=args.steps, pad_to=128)[0]

        t_padded = timed(run_padded, args.repeats)
        rows.append(("authors' released code as run (padded to 128)", t_padded))
        err = max(err, max(float((fast_res[p].scores - pad_res[p]).abs().max() / pad_res[p].abs().max())
                           for p in prompts))

    t_eleuther = None
    if not args.no_eleuther:
        try:
            from knowledge_neurons import KnowledgeNeurons
        except ImportError:
            print("knowledge-neurons not installed: pip install 'kneuron[bench]' to compare with it")
        else:
            eleuther = KnowledgeNeurons(kn.model, tok, model_type="bert", device="cpu")

            def run_eleuther():
                for p in prompts:
                    eleuther.get_scores(p, answer, batch_size=args.steps, steps=args.steps, pbar=False)

            t_eleuther = timed(run_eleuther, args.repeats)
            rows.append(("EleutherAI knowledge-neurons 0.0.2 get_scores", t_eleuther))

    peak = matmul_peak_gflops()
    useful = model_flops_per_prompt(cfg, round(tokens), args.steps) * len(prompts)
    n = len(prompts)
    print(f"{'implementation':48s} {'s/prompt':>9s} {'prompts/s':>10s} {'kneuron speed-up':>17s}")
    for name, t in rows:
        print(f"{name:48s} {t / n:9.3f} {n / t:10.3f} {t / t_fast:16.2f}x")
    print(f"fast vs reference (and padded): max relative difference of scores {err:.2e}")
    top_agree = sum(
        len(set(torch.topk(fast_res[p].scores.flatten(), 20).indices.tolist())
            & set(torch.topk(bf16_res[p].scores.flatten(), 20).indices.tolist())) for p in prompts) / (20 * n)
    print(f"bf16 vs fp32: top-20 neurons shared {100 * top_agree:.0f}%, max relative difference "
          f"{max(float((bf16_res[p].scores - fast_res[p].scores).abs().max() / fast_res[p].scores.abs().max()) for p in prompts):.2e}")
    print(f"speed-up over the slow reference: {t_ref / t_fast:.2f}x")
    if t_padded is not None:
        print(f"speed-up over the authors' released code as run (sequences padded to 128): {t_padded / t_fast:.2f}x "
              f"(batched prompts: {t_padded / t_batched:.2f}x, bf16: {t_padded / t_bf16:.2f}x)")
    if t_eleuther is not None:
        print(f"speed-up over EleutherAI get_scores: {t_eleuther / t_fast:.2f}x (batched prompts: "
              f"{t_eleuther / t_batched:.2f}x, bf16: {t_eleuther / t_bf16:.2f}x)")
    print(f"fp32 matmul peak on this machine ({args.threads} thread(s)): {peak:.1f} GFLOP/s; "
          f"kneuron achieves {useful / t_fast / 1e9:.1f} GFLOP/s of useful IG work "
          f"({100 * useful / t_fast / 1e9 / peak:.0f}% of peak)")


if __name__ == "__main__":
    main()

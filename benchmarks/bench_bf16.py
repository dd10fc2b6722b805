"""bf16 against fp32 on real facts: time, top-neuron overlap, coarse- and refined-set Jaccard.

Same facts as bench_fast_modes.py (seeded sample; PARAREL on SmolLM2, or the BERT fact world).
Prints whether this CPU has bf16 matmul instructions: without them bf16 is the slow option.

    python benchmarks/bench_bf16.py --model world --facts 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_fast_modes import MODELS, jaccard, pick_facts

import kneuron
from kneuron.attribution.integrated_gradients import cpu_has_fast_bf16
from kneuron.selection.coarse import coarse_neurons
from kneuron.selection.refine import refine


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="world")
    ap.add_argument("--facts", type=int, default=10)
    ap.add_argument("--per-fact", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kn = kneuron.load(MODELS[args.model], device="cpu")
    chosen = pick_facts(kn, "pararel" if args.model == "smollm2" else "world", args.facts, args.per_fact, args.seed)
    print(f"# {args.model}: {len(chosen)} facts, {sum(len(p) for _, p in chosen)} prompts, {args.threads} thread(s); "
          f"bf16 matmul instructions on this CPU: {cpu_has_fast_bf16()}", flush=True)
    seconds = {"fp32": 0.0, "bf16": 0.0}
    overlap, coarse_j, refined_j, rel = [], [], [], []
    for f, prompts in chosen:
        out = {}
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            out[precision] = [r.scores for r in kn.attribute(prompts, f.object, precision=precision)]
            seconds[precision] += time.perf_counter() - t0
        for a, b in zip(out["bf16"], out["fp32"]):
            ta = set(torch.topk(a.flatten(), args.top).indices.tolist())
            tb = set(torch.topk(b.flatten(), args.top).indices.tolist())
            overlap.append(len(ta & tb) / args.top)
            coarse_j.append(jaccard(coarse_neurons(a), coarse_neurons(b)))
            rel.append(float((a - b).abs().max() / b.abs().max()))
        refined_j.append(jaccard(refine([coarse_neurons(a) for a in out["bf16"]]),
                                 refine([coarse_neurons(b) for b in out["fp32"]])))
        print(f"  {f.relation} {f.subject!r} -> {f.object!r}: {len(prompts)} prompts", flush=True)
    print(f"bf16 time / fp32 time: {seconds['bf16'] / seconds['fp32']:.2f}x "
          f"({seconds['fp32']:.1f} s vs {seconds['bf16']:.1f} s)")
    print(f"top-{args.top} overlap: mean {statistics.mean(overlap):.3f}, min {min(overlap):.2f}; "
          f"coarse-set Jaccard mean {statistics.mean(coarse_j):.3f}; refined-set Jaccard mean "
          f"{statistics.mean(refined_j):.3f}; scores' max rel. difference median {statistics.median(rel):.2e}")


if __name__ == "__main__":
    main()

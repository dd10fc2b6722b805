"""Neuron interactions on a causal LM: the plain forward pass against cached prefixes, in one run.

The workload is `kneuron interactions` (and `multilingual --interactions`): one fact's top neurons
by integrated gradients, their singles and pairs, the greedy search, and a null of matched random
sets, all suppressed on the same few prompts.  The reference arm runs every row as a full forward
pass (the route before prefix caching); the measured arm computes each prompt's prefix once and
runs only the blank per row.  It prints seconds per arm, their ratio, the largest relative
difference of the mean gold probabilities, and whether the counts (degenerate pairs, greedy set
size, the null's counts) agree.

    python benchmarks/bench_interactions.py --model smollm2-135m --null-repeats 1 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

import kneuron
from kneuron.experiments import interactions
from kneuron.experiments.interactions import top_neurons

PROMPTS = ["The capital of Japan is", "Japan's capital city is", "The capital city of Japan is",
           "Japan, whose capital is"]


def counts(res) -> dict:
    null = res.null or {}
    return {"degenerate": len(res.degenerate_pairs()), "greedy": res.greedy.get("size"),
            "null_degenerate": (null.get("degenerate_pairs") or {}).get("null"),
            "null_greedy": (null.get("greedy_size") or {}).get("null")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--answer", default="Tokyo")
    ap.add_argument("--prompt", action="append", help=f"a prompt of the fact (default: {PROMPTS})")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--null-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kn = kneuron.load(args.model, device="cpu")
    if kn.is_masked:
        raise SystemExit("prefix caches are for causal LMs; give a decoder")
    prompts = args.prompt or PROMPTS
    neurons = top_neurons(kn, prompts, args.answer, args.top)

    def timed():
        start = time.perf_counter()
        res = kn.neuron_interactions(prompts, args.answer, neurons, null_repeats=args.null_repeats, null_seed=0)
        return res, time.perf_counter() - start

    cached, t_cached = timed()
    real = interactions.prefix_caches
    interactions.prefix_caches = lambda kn: contextlib.nullcontext()  # the reference: full passes
    try:
        plain, t_plain = timed()
    finally:
        interactions.prefix_caches = real
    values = [(cached.single[n], plain.single[n]) for n in neurons] + [(cached.pair[k], plain.pair[k]) for k in plain.pair]
    diff = max(abs(a - b) / max(abs(b), 1e-30) for a, b in values)
    rows = (len(neurons) + len(plain.pair)) * len(prompts)
    print(f"{kn.name}, {len(prompts)} prompts, {len(neurons)} neurons ({len(plain.pair)} pairs, {rows} rows before "
          f"the greedy search), null repeats {args.null_repeats}, {args.threads} thread(s), {platform.machine()}")
    print(f"plain forward passes      {t_plain:8.1f} s")
    print(f"cached prefixes           {t_cached:8.1f} s   ({t_plain / t_cached:.2f}x)")
    print(f"max relative difference   {diff:.2e}")
    print(f"counts plain  {counts(plain)}")
    print(f"counts cached {counts(cached)}   (equal: {counts(plain) == counts(cached)})")


if __name__ == "__main__":
    main()

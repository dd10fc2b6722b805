"""Suppressing neurons on a causal LM: the plain forward pass against cached prefixes, in one run.

The workload is what `kneuron compare` does: the same prompts measured again and again, each row
with its own neuron set.  Rows: PARAREL prompts ending at the blank (a seeded sample), each with 3
seeded random neurons x0 at the blank.  It reports ms per row for the plain route
(`scaled_probabilities`), for the first pass inside `prefix_caches` (which computes the prefixes)
and for later passes (every prefix from the store), their ratios, and the largest relative
difference of the values (the cached route must agree within float rounding).

    python benchmarks/bench_interventions.py --model smollm2-135m --rows 400 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import torch

import kneuron
from kneuron.data import load_facts
from kneuron.interventions import prefix_caches, scaled_probabilities
from kneuron.neurons import Neuron


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default="pararel", help="a fact spec (default: PARAREL from the data folder)")
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kn = kneuron.load(args.model, device="cpu")
    if kn.is_masked:
        raise SystemExit("prefix caches are for causal LMs; give a decoder")
    rng = random.Random(args.seed)
    facts = list(load_facts(args.data).facts)
    rng.shuffle(facts)
    pairs = []
    for f in facts:
        pairs += [(p, f.object) for p in f.prompts if kn.ends_at_blank(p)]
        if len(pairs) >= args.rows:
            break
    pairs = pairs[: args.rows]
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    sets = [[Neuron(rng.randrange(kn.num_layers), rng.randrange(kn.num_neurons)) for _ in range(3)] for _ in pairs]

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, (time.perf_counter() - start) / len(pairs) * 1000

    plain, t_plain = timed(lambda: scaled_probabilities(kn, prompts, answers, sets, 0.0))
    with prefix_caches(kn):
        first, t_first = timed(lambda: scaled_probabilities(kn, prompts, answers, sets, 0.0))
        again, t_again = timed(lambda: scaled_probabilities(kn, prompts, answers, sets, 0.0))
    diff = float(((first - plain).abs() / plain.abs().clamp_min(1e-30)).max())
    print(f"{args.model}, {len(pairs)} rows, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print(f"plain forward pass        {t_plain:8.1f} ms/row")
    print(f"cached, first pass        {t_first:8.1f} ms/row   ({t_plain / t_first:.2f}x)")
    print(f"cached, prefixes stored   {t_again:8.1f} ms/row   ({t_plain / t_again:.2f}x)")
    print(f"max relative difference   {diff:.2e}   (identical on repeat: {bool(torch.equal(first, again))})")


if __name__ == "__main__":
    main()

"""How much the fewer-point integration modes change attribution, measured on real facts.

For each prompt: scores with every mode in `kneuron.attribution.paths.FAST_MODES` and with
Gauss-Legendre 64 points (the "true" integral along the path).  Against Riemann-20 (the paper's
default) and against GL-64 it reports, over all prompts: the scores' relative error
(max |d| / max |ref|, median and worst), the Jaccard of the coarse sets (>= 0.2 x max) and, per
fact, the Jaccard of the refined sets (shared by >= 70% of the fact's prompts, at least 3); the
time per prompt relative to Riemann-20, measured in this run.

Facts: SmolLM2-135M on PARAREL (single-token objects, templates ending at the blank, facts whose
object the model ranks first on at least one prompt; seeded sample) and the BERT fact world.

    python benchmarks/bench_fast_modes.py --model smollm2 --facts 12 --threads 1
    python benchmarks/bench_fast_modes.py --model world --facts 12
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import kneuron
from kneuron.attribution.paths import FAST_MODES
from kneuron.data import load_facts
from kneuron.selection.coarse import coarse_neurons
from kneuron.selection.refine import refine

MODELS = {"smollm2": "smollm2-135m", "world": "world"}  # catalogue names
TRUTH = ("gauss_legendre", 64)


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def pick_facts(kn, spec: str, n: int, per_fact: int, seed: int):
    """(fact, prompts) with >= 3 usable prompts that the model gets right at least once."""
    facts = list(load_facts(spec))
    random.Random(seed).shuffle(facts)
    chosen = []
    for f in facts:
        try:
            gold = kn.answer_id(f.object)
        except kneuron.KneuronError:
            continue
        prompts = [p for p in f.prompts if kn.ends_at_blank(p)][:per_fact]
        if len(prompts) < 3:
            continue
        top = kn.blank_logits(prompts).argmax(-1)
        if not bool((top == gold).any()):
            continue
        chosen.append((f, prompts))
        if len(chosen) == n:
            break
    return chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--facts", type=int, default=12)
    ap.add_argument("--per-fact", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--truth-steps", type=int, default=64, help="Gauss-Legendre points of the 'true' integral")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kn = kneuron.load(MODELS[args.model], device="cpu")
    spec = "pararel" if args.model == "smollm2" else "world"
    chosen = pick_facts(kn, spec, args.facts, args.per_fact, args.seed)
    n_prompts = sum(len(p) for _, p in chosen)
    print(f"# {args.model} ({kn.name}), {len(chosen)} facts, {n_prompts} prompts, seed {args.seed}, "
          f"{args.threads} thread(s), fp32", flush=True)
    modes = dict(FAST_MODES)
    modes["truth"] = (TRUTH[0], args.truth_steps)
    scores = {name: [] for name in modes}
    seconds = {name: 0.0 for name in modes}
    for f, prompts in chosen:
        for name, (rule, steps) in modes.items():
            t0 = time.perf_counter()
            res = kn.attribute(prompts, f.object, steps=steps, rule=rule)
            seconds[name] += time.perf_counter() - t0
            scores[name].append([r.scores for r in res])
        print(f"  {f.relation} {f.subject!r} -> {f.object!r}: {len(prompts)} prompts", flush=True)

    def compare(name, ref):
        rel, coarse_j, refined_j = [], [], []
        for fa, fb in zip(scores[name], scores[ref]):
            for a, b in zip(fa, fb):
                rel.append(float((a - b).abs().max() / b.abs().max()))
                coarse_j.append(jaccard(coarse_neurons(a), coarse_neurons(b)))
            refined_j.append(jaccard(refine([coarse_neurons(a) for a in fa]),
                                     refine([coarse_neurons(b) for b in fb])))
        return rel, coarse_j, refined_j

    print(f"\nmode (rule, steps) | time vs riemann-20 | vs riemann-20: rel. error median / max, coarse J, "
          f"refined J | vs GL-{args.truth_steps}: rel. error median / max, coarse J, refined J")
    for name, (rule, steps) in modes.items():
        row = [f"{name} ({rule}, {steps})", f"{seconds[name] / seconds['exact']:.2f}x"]
        for ref in ("exact", "truth"):
            rel, cj, rj = compare(name, ref)
            row.append(f"{statistics.median(rel):.2e} / {max(rel):.2e}, {statistics.mean(cj):.3f}, "
                       f"{statistics.mean(rj):.3f}")
        print(" | ".join(row), flush=True)
    nonempty = sum(bool(refine([coarse_neurons(a) for a in fa])) for fa in scores["exact"])
    print(f"\nfacts with a non-empty refined set (riemann-20): {nonempty} of {len(chosen)}")
    print(f"\nseconds per prompt, riemann-20: {seconds['exact'] / n_prompts:.2f}")


if __name__ == "__main__":
    main()

"""Real pretrained decoders (Gemma 3 270M, SmolLM2 135M): the fast attribution engine against the
slow per-layer reference loop, and the prefix-cache path against one full forward, in one process.

    python benchmarks/bench_real_decoders.py [--root DIR] [--threads 1] [--steps 20]

Each model is loaded by its catalogue name (`kneuron models fetch gemma3-270m smollm2-135m` puts them
in the cache), or from `--root` (default `$KNEURON_REAL_MODELS`) when that holds the converted Hugging
Face directories gemma3-270m/ and smollm2-135m/.  Prints, per
model: P(" Tokyo" | "The capital of Japan is") with and without the tokenizer's BOS, the largest
relative difference of the scores, the largest absolute difference of activations and of the
cached-prefix logits, and the seconds of each engine with their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

PROMPT, ANSWER = "The capital of Japan is", "Tokyo"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.environ.get("KNEURON_REAL_MODELS"),
                    help="directory of converted models (default: $KNEURON_REAL_MODELS, else the catalogue cache)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import kneuron
    from kneuron.attribution.reference import reference_attribution
    from kneuron.models import catalogue
    from kneuron.models.replay import causal_trace

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.steps} steps")
    for name in ("gemma3-270m", "smollm2-135m"):
        path = Path(args.root) / name if args.root else None
        if path is not None and (path / "config.json").is_file():
            kn = kneuron.load(str(path), device="cpu")
        elif catalogue.cached_dir(catalogue.get(name)) is not None:
            kn = kneuron.load(name, device="cpu")
        else:
            print(f"{name}: neither under {args.root or '$KNEURON_REAL_MODELS'} nor in the catalogue cache "
                  f"(kneuron models fetch {name}), skipped")
            continue
        enc = kn.encode(PROMPT, ANSWER)
        ids = torch.tensor([enc.ids])
        lead = len(enc.ids) - len(kn.tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            full = kn.model(input_ids=ids).logits[0]
            bare = kn.model(input_ids=ids[:, lead:]).logits[0, -1]
            cached = max(float((causal_trace(kn.model, kn.adapter, ids, c).logits[0] - full[c:]).abs().max())
                         for c in range(1, ids.shape[1]))
        p = float(torch.softmax(full[-1], -1)[enc.target_ids[0]])
        p_bare = float(torch.softmax(bare, -1)[enc.target_ids[0]])
        t = time.perf_counter()
        res = kn.attribute(PROMPT, ANSWER, steps=args.steps)
        fast = time.perf_counter() - t
        t = time.perf_counter()
        ref, acts = reference_attribution(kn, PROMPT, ANSWER, steps=args.steps)
        slow = time.perf_counter() - t
        rel = float((res.scores - ref).abs().max() / ref.abs().max())
        print(f"{name}: {kn.adapter.family}, {kn.num_layers} x {kn.num_neurons} neurons; "
              f"{lead} leading special token(s); P(Tokyo) {p:.4f} as encoded, {p_bare:.4f} without them")
        print(f"  scores max rel diff {rel:.2e}, activations max abs diff "
              f"{float((res.activations - acts).abs().max()):.2e}, prefix cache max abs logit diff {cached:.2e} "
              f"(logits up to {float(full.abs().max()):.1f})")
        print(f"  attribution: fast {fast:.1f} s, reference {slow:.1f} s, ratio {slow / fast:.2f}x")


if __name__ == "__main__":
    main()

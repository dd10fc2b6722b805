"""ROME's value optimisation (kneuron.edits.rome.compute_rome, shared by ROME and the subject-neuron
edit): the output head run on the answer positions only (the default) against the head run on
every position (`full_logits=True`, the reference), on real models, in one process.

    python benchmarks/bench_rome_head.py [--models smollm2-135m,gemma3-270m] [--threads 1] [--steps 20]

Prints the seconds of each path, their ratio, and how far the two v* and the optimisation records
are apart.  The key statistics are read from the cache (or computed once, before the timing).
"""

from __future__ import annotations

import argparse
import time

import torch

PROMPTS = ["The capital of Japan is", "The capital city of Japan is", "Japan's capital city is", "Japan's capital is"]


def main() -> None:
    import kneuron
    from kneuron.edits import compute_rome, key_covariance
    from kneuron.edits.rome import default_layer
    from kneuron.machine import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {args.threads} thread(s); {args.steps} steps, "
          f"{len(PROMPTS)} prompts x 6 prefixes + the KL prompt; stop_prob 1.1 (every step runs)")
    for name in args.models.split(","):
        kn = kneuron.load(name, device="cpu")
        layer = default_layer(kn)
        key_covariance(kn, layer)  # cached: outside the timing
        runs = {}
        for label, full in (("full head (reference)", True), ("answer positions (default)", False)):
            start = time.perf_counter()
            runs[label] = compute_rome(kn, "Japan", PROMPTS, "Kyoto", layer=layer, steps=args.steps, stop_prob=1.1,
                                       full_logits=full)
            runs[label].info["seconds"] = time.perf_counter() - start
        (ref_label, ref), (fast_label, fast) = runs.items()
        diff = float((fast.value - ref.value).norm() / ref.value.norm())
        p_diff = max(abs(a["p_new"] - b["p_new"]) for a, b in zip(fast.info["history"], ref.info["history"]))
        vocab = kn.model.get_output_embeddings().weight.shape[0]
        print(f"{name} (layer {layer}, vocab {vocab}): {ref_label} {ref.info['seconds']:.1f} s, "
              f"{fast_label} {fast.info['seconds']:.1f} s, ratio {ref.info['seconds'] / fast.info['seconds']:.2f}x; "
              f"|v*_fast - v*_ref| / |v*_ref| = {diff:.1e}, max |p_new| difference over the steps {p_diff:.1e}")


if __name__ == "__main__":
    main()

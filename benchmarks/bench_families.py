"""Fast exact attribution against the slow reference for every supported family, in one process.

    python benchmarks/bench_families.py [--threads 1] [--layers 6] [--hidden 256]

Each family gets a random model of the same modest shape; the script prints seconds per prompt for
the reference (the authors' loop: one full forward and backward per layer) and for kneuron, the
speed-up, and the largest relative difference of the scores.  Causal LMs gain most: the prompt is
computed once as a cache and only the blank position runs for the 20 x layers path points.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPTS = ["The capital of Ireland is [MASK].", "Berlin is the capital of [MASK]."]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--families", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tiny_decoders import _tokenizer, family_configs
    from tiny_models import save_tiny_bert
    from transformers import AutoModelForCausalLM

    import kneuron
    from kneuron.attribution.reference import reference_attribution

    h, L = args.hidden, args.layers
    shape = dict(hidden_size=h, intermediate_size=4 * h, num_hidden_layers=L)
    overrides = {
        "gpt2": dict(n_embd=h, n_layer=L, n_inner=4 * h), "gptj": dict(n_embd=h, n_layer=L, n_inner=4 * h),
        "gpt_neo": dict(hidden_size=h, num_layers=L, intermediate_size=4 * h,
                        attention_types=[[["global", "local"], L // 2]]),
        "opt": dict(hidden_size=h, num_hidden_layers=L, ffn_dim=4 * h, word_embed_proj_dim=h),
    }
    wanted = [f for f in args.families.split(",") if f]
    print(f"shape: {L} layers, hidden {h}, {4 * h} neurons/layer, vocab {args.vocab}; {args.threads} thread(s); "
          f"{len(PROMPTS)} prompts, steps 20")
    print(f"{'family':10s} {'reference s/prompt':>19s} {'kneuron s/prompt':>17s} {'speed-up':>9s} {'max rel diff':>13s}")
    tmp = Path(tempfile.mkdtemp())
    families = ["bert"] + list(family_configs(args.vocab))
    for fam in families:
        if wanted and fam not in wanted:
            continue
        out = tmp / fam
        if fam == "bert":
            save_tiny_bert(out, layers=L, hidden=h, intermediate=4 * h)
        else:
            out.mkdir(parents=True)
            tok = _tokenizer(out)
            base = family_configs(args.vocab)[fam]
            values = {**base.to_dict(), **(overrides.get(fam) or shape)}
            for derived in ("attention_layers", "layer_types"):  # recomputed from the layer count
                values.pop(derived, None)
            cfg = type(base).from_dict(values)
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
            tok.save_pretrained(out)
        kn = kneuron.load(str(out), device="cpu")
        answer = "Dublin"
        kn.attribute(PROMPTS[0], answer)  # warm-up
        t = time.perf_counter()
        fast = [kn.attribute(p, answer) for p in PROMPTS]
        t_fast = (time.perf_counter() - t) / len(PROMPTS)
        t = time.perf_counter()
        ref = [reference_attribution(kn, p, answer)[0] for p in PROMPTS]
        t_ref = (time.perf_counter() - t) / len(PROMPTS)
        err = max(float((f.scores - r).abs().max() / r.abs().max()) for f, r in zip(fast, ref))
        print(f"{fam:10s} {t_ref:19.3f} {t_fast:17.3f} {t_ref / t_fast:8.1f}x {err:13.1e}")


if __name__ == "__main__":
    main()

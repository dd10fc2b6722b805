"""Activation of knowledge neurons on web sentences of three types (spec 5.3): Table 4 and Table 3.

BINGREL gives, for each fact, `th` sentences (containing head and tail) and `h` sentences (only
the head).  Paper-faithful construction (the authors' `src/4_check_weights_distant.py`):

- T1 (`mask_t1`): in each th sentence every occurrence of the head is first replaced by '@' * len(head)
  (protected), then the first occurrence of the tail not touching a letter on either side
  (`(?<![a-zA-Z])tail(?![a-zA-Z])`) becomes "[MASK]", then the '@' runs become the head again.
- T2 (`mask_t2`): in each h sentence (head protected the same way) a random whitespace word among
  the first 50 becomes "[MASK]"; when it hits the protected head it redraws, at most 4 times.
- T3 (`mask_t3`): as many sentences as the fact has T1 sentences, drawn with `random.sample` from
  the pool of all th + h sentences of all BINGREL relations, each with a random word masked.
- Regex quirk (kept, `escape="paper"`): entity names are turned into patterns by escaping only
  `( ) $ .`, so other metacharacters act as regex syntax.  A name that is not a valid pattern at
  all (e.g. "C++" before Python 3.11, which reads it as possessive) would crash the authors'
  script; here it falls back to full escaping, on every Python version.
  `escape="full"` escapes everything (`re.escape`), a named deviation.
- Random draws: Python's `random.Random(seed)` with the authors' calls (randint, sample), first
  for the knowledge neurons, then on the same stream for the baseline (its draws are not paired
  with the knowledge neurons', as in the authors' run).  The relation order is the run's (the
  authors' was `os.listdir` order), and the T3 pool is in BINGREL file (relation id) order.
- Facts with no th or no h sentence (`no_exmp`) or no neuron (`no_kn`) are skipped.  The value
  recorded is the activation at the [MASK] of each of the fact's neurons, averaged per neuron
  over the fact's sentences of a type; per relation the mean over all (fact, neuron) values, and
  the reported number is the unweighted mean over relations (a relation with no value counts 0,
  as in the authors' `src/8_plot_fig_distant.py`).
- Sentences are cut to `max_length` tokens (the authors: 512).  A sentence whose [MASK] is missing
  (the tail was not found, or it was cut off) would crash the authors' script; here it is left
  out, and a fact left without a sentence of some type is skipped (`no_mask`).  Both are counted.

Table 3 (`trigger_examples`, the authors' `src/5_find_trigger_examples.py`): a fact's T1 sentences
ranked by the *sum* of its neurons' activations; the top and bottom ones are listed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from kneuron.data.facts import MASK
from kneuron.errors import KneuronError
from kneuron.models.tokens import fill_mask_token

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

TYPES = ("T1", "T2", "T3")
TYPE_NAMES = {"T1": "head and tail (T1)", "T2": "head only (T2)", "T3": "random (T3)"}
ESCAPES = ("paper", "full")
MAX_WORD = 50  # T2/T3 mask one of the first 50 whitespace words
_NEW_SYNTAX = ("++", "*+", "?+", "}+", "(?>")  # possessive quantifiers, atomic groups: Python >= 3.11 only


def paper_escape(text: str) -> str:
    """The authors' escaping: only `)`, `(`, `$` and `.` get a backslash."""
    for ch in (")", "(", "$", "."):
        text = text.replace(ch, "\\" + ch)
    return text


def entity_pattern(text: str, escape: str = "paper") -> str:
    if escape not in ESCAPES:
        raise KneuronError(f"escape must be one of {', '.join(ESCAPES)}, got {escape!r}")
    if escape == "full":
        return re.escape(text)
    pattern = paper_escape(text)
    if any(x in pattern for x in _NEW_SYNTAX):
        return re.escape(text)  # an error before Python 3.11 (the authors' Python): no quirk to mirror
    try:
        re.compile(pattern)
        re.compile(f"(?<![a-zA-Z]){pattern}(?![a-zA-Z])")
    except re.error:
        return re.escape(text)  # the authors' script would raise here
    return pattern


def _restore(text: str, head: str) -> str:
    pad = "@" * len(head)
    try:
        return re.sub(pad, head, text)  # the authors pass the head as a replacement template
    except re.error:
        return text.replace(pad, head)


def mask_t1(sentences: Sequence[str], head: str, tail: str, escape: str = "paper") -> list[str]:
    """T1: the first letter-bounded occurrence of the tail, head occurrences protected, becomes [MASK]."""
    ph, pt = entity_pattern(head, escape), entity_pattern(tail, escape)
    out = []
    for sent in sentences:
        pad = re.sub(ph, "@" * len(head), sent) if head else sent
        masked = re.sub(f"(?<![a-zA-Z]){pt}(?![a-zA-Z])", MASK, pad, count=1)
        out.append(_restore(masked, head))
    return out


def mask_t2(sentences: Sequence[str], head: str, rng: random.Random, escape: str = "paper") -> list[str]:
    """T2: a random word among the first 50 (avoiding the head, at most 4 redraws) becomes [MASK]."""
    ph = entity_pattern(head, escape)
    pad = "@" * len(head)
    out = []
    for sent in sentences:
        sent = re.sub(ph, pad, sent) if head else sent
        words = sent.split(" ")
        pos = rng.randint(1, min(len(words), MAX_WORD)) - 1
        repeat = 0
        while words[pos] == pad:
            pos = rng.randint(1, min(len(words), MAX_WORD)) - 1
            repeat += 1
            if repeat > 3:
                break
        words[pos] = MASK
        out.append(_restore(" ".join(words), head))
    return out


def mask_t3(sentences: Sequence[str], rng: random.Random) -> list[str]:
    """T3: a random word among the first 50 becomes [MASK]."""
    out = []
    for sent in sentences:
        words = sent.split(" ")
        pos = rng.randint(1, min(len(words), MAX_WORD)) - 1
        words[pos] = MASK
        out.append(" ".join(words))
    return out


def sentence_pool(bags: Mapping[str, Sequence]) -> list[str]:
    """All th + h sentences of all relations, fact by fact (the T3 pool)."""
    pool: list[str] = []
    for rel_bags in bags.values():
        for b in rel_bags:
            pool.extend(list(b.th) + list(b.h))
    return pool


# -- reading activations -------------------------------------------------------------------------

def _max_length(kn: KnowledgeModel, max_length: int) -> int:
    limit = getattr(getattr(kn.model, "config", None), "max_position_embeddings", None) or max_length
    return int(min(max_length, limit))


@torch.no_grad()
def blank_neuron_activations(kn: KnowledgeModel, texts: Sequence[str], neurons: Sequence[Sequence], max_length: int = 512,
                             batch_size: int = 64) -> list[np.ndarray | None]:
    """For each text, the activations of its neurons at its first [MASK] (None: no [MASK] in the tokens).

    Texts are tokenized like the authors' (`[CLS] tokens[:max_length-2] [SEP]`, no padding);
    equal-length texts share a batch, so padding never changes a result.
    """
    if not kn.is_masked:
        raise KneuronError("prompt-type activations need a masked language model")
    max_length = _max_length(kn, max_length)
    tok = kn.tokenizer
    enc = tok([fill_mask_token(t, tok) for t in texts], truncation=True, max_length=max_length)["input_ids"]
    mask_id = tok.mask_token_id
    out: list[np.ndarray | None] = [None] * len(texts)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(enc):
        if mask_id in ids and len(neurons[i]):
            groups.setdefault(len(ids), []).append(i)
        elif mask_id in ids:
            out[i] = np.zeros(0, dtype=np.float32)
    blocks = kn.adapter.blocks(kn.model)
    captured: dict[int, torch.Tensor] = {}
    where: dict[str, torch.Tensor] = {}

    def hook(layer):
        def fn(module, args):
            captured[layer] = args[0][where["rows"], where["cols"]].float()
        return fn

    handles = [kn.adapter.down_projection(kn.model, i).register_forward_pre_hook(hook(i)) for i in range(len(blocks))]
    try:
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                chunk = idx[s:s + batch_size]
                ids = torch.tensor([enc[i] for i in chunk], device=kn.device)
                where["rows"] = torch.arange(len(chunk), device=kn.device)
                where["cols"] = torch.tensor([enc[i].index(mask_id) for i in chunk], device=kn.device)
                kn.model(input_ids=ids, attention_mask=torch.ones_like(ids))
                acts = torch.stack([captured[i] for i in range(len(blocks))], dim=1).cpu()  # (B, L, N)
                for r, i in enumerate(chunk):
                    ln = torch.tensor([[int(a), int(b)] for a, b in neurons[i]])
                    out[i] = acts[r, ln[:, 0], ln[:, 1]].numpy()
    finally:
        for h in handles:
            h.remove()
    return out


# -- the experiment ------------------------------------------------------------------------------

def build_prompt_types(facts, universe_sets: Mapping[int, Sequence], relation_facts: Mapping[str, Sequence[int]],
                       bags: Mapping[str, Sequence], pool: Sequence[str], rng: random.Random,
                       escape: str = "paper") -> tuple[dict, list[dict]]:
    """({fact: {"T1": [...], "T2": [...], "T3": [...]}}, status rows) for one method's neuron sets.

    `relation_facts[rel]` lists the run's facts of `rel` in order (position = BINGREL bag index).
    """
    prompts: dict[int, dict[str, list[str]]] = {}
    status = []
    for rel, fact_ids in relation_facts.items():
        rel_bags = bags[rel]
        for pos, i in enumerate(fact_ids):
            f = facts.facts[i]
            bag = rel_bags[pos]
            row = {"relation": rel, "fact": i, "subject": f.subject, "object": f.object,
                   "th": len(bag.th), "h": len(bag.h)}
            neurons = universe_sets.get(i, [])
            if not bag.th or not bag.h:
                status.append({**row, "status": "no_exmp"})
                continue
            if not neurons:
                status.append({**row, "status": "no_kn"})
                continue
            t1 = mask_t1(bag.th, f.subject, f.object, escape)
            t2 = mask_t2(bag.h, f.subject, rng, escape)
            t3 = mask_t3(rng.sample(pool, min(len(t1), len(pool))), rng)
            prompts[i] = {"T1": t1, "T2": t2, "T3": t3}
            status.append({**row, "status": "ok"})
    return prompts, status


def prompt_type_activations(kn: KnowledgeModel, facts, sets_by_method: Mapping[str, Mapping[int, Sequence]],
                            relation_facts: Mapping[str, Sequence[int]], bags: Mapping[str, Sequence],
                            pool: Sequence[str] | None = None, seed: int = 42, escape: str = "paper",
                            max_length: int = 512, strict: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, status).

    values: one row per (method, relation, fact, neuron, type): the neuron's activation at [MASK]
    averaged over the fact's sentences of that type.  status: one row per (method, fact) with
    ok / no_exmp / no_kn / no_mask and sentence counts.  `strict`: each relation has exactly one
    bag per fact (False: the facts are the first ones of a longer relation, e.g. `--limit-facts`).
    """
    from kneuron.data.bingrel import check_alignment

    for rel, fact_ids in relation_facts.items():
        if rel not in bags:
            raise KneuronError(f"no BINGREL sentences for relation {rel}")
        rel_bags = list(bags[rel])
        if not strict and len(rel_bags) > len(fact_ids):
            rel_bags = rel_bags[:len(fact_ids)]
        check_alignment(rel_bags, [facts.facts[i] for i in fact_ids], rel)
    pool = sentence_pool(bags) if pool is None else list(pool)
    rng = random.Random(seed)
    value_rows, status_rows = [], []
    for method, sets in sets_by_method.items():
        prompts, status = build_prompt_types(facts, sets, relation_facts, bags, pool, rng, escape)
        texts, owner = [], []
        for i, by_type in prompts.items():
            for t in TYPES:
                for s in by_type[t]:
                    texts.append(s)
                    owner.append((i, t))
        acts = blank_neuron_activations(kn, texts, [sets[i] for i, _ in owner], max_length=max_length)
        per: dict[tuple[int, str], list[np.ndarray]] = {}
        dropped: dict[int, int] = {}
        for (i, t), a in zip(owner, acts):
            if a is None:
                dropped[i] = dropped.get(i, 0) + 1
            else:
                per.setdefault((i, t), []).append(a)
        for row in status:
            i = row["fact"]
            row = {"method": method, **row, "dropped_sentences": dropped.get(i, 0)}
            if row["status"] == "ok":
                counts = {t: len(per.get((i, t), [])) for t in TYPES}
                row.update({f"n_{t}": counts[t] for t in TYPES})
                if min(counts.values()) == 0:
                    row["status"] = "no_mask"
                else:
                    for t in TYPES:
                        mean = np.mean(np.stack(per[(i, t)]), axis=0)
                        for (layer, index), v in zip(sets[i], mean):
                            value_rows.append({"method": method, "relation": row["relation"], "fact": i,
                                               "layer": int(layer), "index": int(index), "type": t,
                                               "activation": float(v), "sentences": counts[t]})
            status_rows.append(row)
    values = pd.DataFrame(value_rows, columns=["method", "relation", "fact", "layer", "index", "type",
                                               "activation", "sentences"])
    return values, pd.DataFrame(status_rows)


def prompt_type_relation_means(values: pd.DataFrame, relations: Sequence[str],
                               methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (method, relation, type): mean over the pooled (fact, neuron) values; 0 when there are none."""
    methods = list(dict.fromkeys(values["method"])) if methods is None else list(methods)
    rows = []
    for method in methods:
        for rel in relations:
            sub = values[(values["method"] == method) & (values["relation"] == rel)]
            for t in TYPES:
                v = sub[sub["type"] == t]["activation"]
                rows.append({"method": method, "relation": rel, "type": t,
                             "activation": float(v.mean()) if len(v) else 0.0,
                             "values": int(len(v)), "facts": int(sub[sub["type"] == t]["fact"].nunique())})
    return pd.DataFrame(rows)


def prompt_type_means(relation_means: pd.DataFrame) -> pd.DataFrame:
    """Table 4: per method, the unweighted mean over relations of T1, T2 and T3."""
    pivot = relation_means.pivot_table(index="method", columns="type", values="activation", aggfunc="mean",
                                       sort=False)
    out = pivot.reindex(columns=list(TYPES)).reset_index()
    out.columns.name = None
    out["relations"] = [relation_means[relation_means["method"] == m]["relation"].nunique() for m in out["method"]]
    return out


def trigger_examples(kn: KnowledgeModel, facts, sets: Mapping[int, Sequence], relation_facts: Mapping[str, Sequence[int]],
                     bags: Mapping[str, Sequence], relations: Sequence[str] | None = None, facts_per_relation: int = 1,
                     top: int = 2, bottom: int = 2, escape: str = "paper", max_length: int = 512) -> pd.DataFrame:
    """Table 3: for chosen facts, the T1 sentences ranked by the sum of the fact's neuron activations.

    Relations default to the authors' P740 and P937 when present, else all.  Per relation the
    facts with neurons and the most T1 sentences are chosen (first in order on ties).
    """
    if relations is None:
        relations = [r for r in ("P740", "P937") if r in relation_facts] or list(relation_facts)
    rows = []
    for rel in relations:
        fact_ids = list(relation_facts.get(rel, []))
        cands = []
        for pos, i in enumerate(fact_ids):
            if sets.get(i) and pos < len(bags.get(rel, [])) and bags[rel][pos].th:
                cands.append((-len(bags[rel][pos].th), pos, i))
        for _, pos, i in sorted(cands)[:facts_per_relation]:
            f = facts.facts[i]
            t1 = mask_t1(bags[rel][pos].th, f.subject, f.object, escape)
            acts = blank_neuron_activations(kn, t1, [sets[i]] * len(t1), max_length=max_length)
            scored = [(float(a.sum()), s) for a, s in zip(acts, t1) if a is not None]
            scored = sorted(scored, key=lambda x: -x[0])
            n = len(scored)
            picks = [("top", k) for k in range(min(top, n))]
            picks += [("bottom", k) for k in range(max(min(top, n), n - bottom), n)]
            neurons = " ".join(f"L{a}.{b}" for a, b in sets[i])
            for kind, k in picks:
                rows.append({"relation": rel, "fact": i, "subject": f.subject, "object": f.object,
                             "neurons": neurons, "rank": k + 1, "of": n, "which": kind,
                             "activation_sum": scored[k][0], "sentence": scored[k][1]})
    return pd.DataFrame(rows, columns=["relation", "fact", "subject", "object", "neurons", "rank", "of", "which",
                                       "activation_sum", "sentence"])


def run_prompt_types(kn: KnowledgeModel, run, bags: Mapping[str, Sequence], seed: int = 42, methods: Sequence[str] = ("kn", "baseline"),
                     escape: str = "paper", max_length: int = 512, relations: Sequence[str] | None = None):
    """5.3 on a `RunData` (all its relations, or `relations`): (values, status, relation_means, means, triggers)."""
    relation_facts: dict[str, list[int]] = {}
    for i, f in enumerate(run.facts.facts):
        if relations is None or f.relation in relations:
            relation_facts.setdefault(f.relation, []).append(i)
    missing = [r for r in relation_facts if r not in bags]
    if missing:
        raise KneuronError(f"no BINGREL sentences for relation(s) {', '.join(missing)}")
    sets = {m: run.sets(m) for m in methods}
    values, status = prompt_type_activations(kn, run.facts, sets, relation_facts, bags, seed=seed, escape=escape,
                                             max_length=max_length, strict=run.config.limit_facts is None)
    rel_means = prompt_type_relation_means(values, list(relation_facts), methods)
    means = prompt_type_means(rel_means)
    triggers = trigger_examples(kn, run.facts, sets["kn"] if "kn" in sets else next(iter(sets.values())),
                                relation_facts, bags, escape=escape, max_length=max_length)
    return values, status, rel_means, means, triggers

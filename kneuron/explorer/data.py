"""What the explorer shows, computed once with the model and cached in the run directory.

From the run itself (no model): relations, facts, prompts with gold probabilities, the coarse
sets with their attribution scores (discovery stores only scores >= threshold x max, so the
heatmaps show those and leave the rest blank), the refined sets.

With the model (cached as the run's extra `explorer`, keyed by model and neuron list):
- each neuron's value slot projected through the output embedding (top/bottom tokens),
- each neuron's activation at every token of every prompt of the run and of the world's or
  BINGREL's sentences (top/bottom sentences kept with per-token values; blank activations for
  the histogram). Texts are ranked by their maximum over tokens after the first: the first
  position ([CLS], or a decoder's attention sink) carries activations far larger than any other,
  and would rank every text the same,
- the gold probability of every prompt with its fact's refined set suppressed (x0) and amplified (x2).

Full heatmaps (cached as the extra arrays `explorer_scores`, keyed by model, the run's attribution
settings and its prompts): discovery keeps only each prompt's coarse set, so the layer x neuron
map of every score is recomputed once with the run's own settings (steps, rule, precision),
for runs of up to `FULL_HEATMAP_PROMPTS` prompts by default (exact IG costs seconds a prompt on a
real model); `heatmaps="full"` or `"coarse"` decides for any size.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from kneuron.errors import KneuronError
from kneuron.runs.rundir import RunDir

EXTRA = "explorer"
SCORES = "explorer_scores"
FORMAT = 2
FULL_HEATMAP_PROMPTS = 2000
HEATMAPS = ("auto", "full", "coarse")
TOP_TOKENS = 20
TOP_SENTENCES = 5
MAX_SENTENCES = 2000  # BINGREL/world sentences scanned per run (first ones, relation by relation)
HIST_BINS = 30


def neuron_name(layer: int, index: int) -> str:
    return f"L{int(layer)}.{int(index)}"


def _run_part(run: RunDir) -> dict:
    """Everything the page shows that the run directory already holds."""
    from kneuron.experiments.rundata import RunData

    data = RunData.load(run.path)
    records = run.records()
    facts = []
    for i, fact in enumerate(data.facts.facts):
        rec = records.get(i, {})
        coarse = rec.get("kn") or []
        facts.append({
            "id": i, "relation": fact.relation, "subject": fact.subject, "object": fact.object,
            "prompts": list(fact.prompts), "prob": [float(p) for p in rec.get("prob", [])],
            "skipped": "skipped" in rec,
            "coarse": [[[int(a), int(b), float(s)] for a, b, s in prompt] for prompt in coarse],
            "kn": [], "baseline": []})
    for method in ("kn", "baseline"):
        for fact_id, neurons in data.sets(method).items():
            facts[fact_id][method] = [neuron_name(n.layer, n.index) for n in neurons]
    return {"data": data, "facts": facts, "summary": data.summary, "config": data.config.to_json(),
            "labels": data.labels()}


def _sentences(data, limit: int = MAX_SENTENCES) -> tuple[list[str], str]:
    """World/BINGREL sentences for the activation views ([MASK]-free text), and where they come from."""
    from kneuron.experiments.rundata import load_bags, resolve_bingrel

    path = resolve_bingrel(data.config.data)
    if path is None:
        return [], ""
    try:
        bags = load_bags(path)
    except KneuronError:
        return [], ""
    out: list[str] = []
    for rel in bags:
        if data.universe and rel not in data.universe:
            continue
        for bag in bags[rel]:
            out.extend(bag.th)
            if len(out) >= limit:
                return out[:limit], str(path)
    return out, str(path)


def _key(model_name: str, neurons: list[str], sentences: list[str]) -> str:
    h = hashlib.sha256(json.dumps([FORMAT, model_name, neurons, sentences]).encode()).hexdigest()
    return h[:16]


def _token_texts(kn, ids: list[int]) -> list[str]:
    return [kn.tokenizer.decode([t]) for t in ids]


@torch.no_grad()
def _model_part(kn, run_part: dict, sentences: list[str]) -> dict:
    from kneuron.data.facts import MASK
    from kneuron.interventions.activations import scaled_probabilities
    from kneuron.models.replay import read_activations

    facts = [f for f in run_part["facts"] if not f["skipped"]]
    names = sorted({n for f in facts for m in ("kn", "baseline") for n in f[m]},
                   key=lambda s: tuple(int(x) for x in s[1:].split(".")))
    pairs = [tuple(int(x) for x in s[1:].split(".")) for s in names]
    layers = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    index = torch.tensor([p[1] for p in pairs], dtype=torch.long)

    # Vocabulary projection of each value slot (no final norm: an approximation where the model has one).
    unembed = kn.model.get_output_embeddings().weight.detach().float()
    vocab = {}
    for name, (layer, idx) in zip(names, pairs):
        w = kn.adapter.value_slots(kn.model, layer).detach().float()
        slot = w[:, idx] if kn.adapter.slot_axis == 1 else w[idx, :]
        logits = unembed @ slot
        top, bottom = torch.topk(logits, TOP_TOKENS), torch.topk(-logits, TOP_TOKENS)
        vocab[name] = {"top": [[kn.tokenizer.decode([int(t)]), float(v)] for v, t in zip(top.values, top.indices)],
                       "bottom": [[kn.tokenizer.decode([int(t)]), float(-v)] for v, t in zip(bottom.values, bottom.indices)]}

    # Activations at every token: prompts of the run, then sentences.
    texts = [(f"fact/{f['id']}", p) for f in facts for p in f["prompts"]] + [("sentence", s) for s in sentences]
    blank_acts = {n: [] for n in names}
    best: dict[str, list] = {n: [] for n in names}  # (max act, text id) for every text
    token_acts = []
    for source, text in texts:
        if source == "sentence":
            ids = kn.tokenizer(text.replace(MASK, kn.tokenizer.mask_token or MASK))["input_ids"]
            blank = None
        else:
            enc = kn.encode(text)
            ids, blank = list(enc.ids), list(enc.blank)
        acts, _ = read_activations(kn.model, kn.adapter, torch.tensor([ids], device=kn.device))
        sel = acts[0][layers, :, index].float().cpu().numpy()  # (neurons, T)
        token_acts.append((ids, sel))
        for j, name in enumerate(names):
            best[name].append(float(sel[j, 1:].max() if sel.shape[1] > 1 else sel[j].max()))
            if blank is not None:
                blank_acts[name].append(float(sel[j, blank].mean()))
    neurons = {}
    for j, name in enumerate(names):
        order = np.argsort(np.asarray(best[name]), kind="stable")
        picked = {"top": order[::-1][:TOP_SENTENCES], "bottom": order[:TOP_SENTENCES]}
        entry = {"vocab": vocab[name]}
        for side, rows in picked.items():
            entry[side] = [{"source": texts[r][0], "tokens": _token_texts(kn, token_acts[r][0]),
                            "acts": [round(float(a), 4) for a in token_acts[r][1][j]],
                            "max": round(best[name][r], 4)} for r in rows]
        values = np.asarray(blank_acts[name])
        counts, edges = np.histogram(values, bins=HIST_BINS)
        entry["hist"] = {"counts": counts.tolist(), "edges": [float(e) for e in edges], "n": int(values.size)}
        neurons[name] = entry

    # Suppress / amplify each fact's refined set on its own prompts.
    effects = {}
    prompts, answers, sets, owners = [], [], [], []
    for f in facts:
        if not f["kn"]:
            continue
        nset = [tuple(int(x) for x in n[1:].split(".")) for n in f["kn"]]
        for p in f["prompts"]:
            prompts.append(p)
            answers.append(f["object"])
            sets.append(nset)
            owners.append(f["id"])
    if prompts:
        # Discovery always attributes the gold probability ("product"); a run config holds no other objective.
        for label, factor in (("suppress", 0.0), ("amplify", 2.0)):
            probs = scaled_probabilities(kn, prompts, answers, sets, factor, target="product").tolist()
            for owner, p in zip(owners, probs):
                effects.setdefault(str(owner), {}).setdefault(label, []).append(float(p))
    return {"neurons": neurons, "effects": effects}


def _load_model(model_name):
    import kneuron

    try:
        return kneuron.load(str(model_name))
    except KneuronError as exc:
        raise KneuronError(f"cannot load the run's model {model_name!r}: {exc}; pass --model") from None
    except (OSError, ValueError) as exc:
        raise KneuronError(f"cannot load the run's model {model_name!r} ({type(exc).__name__}); "
                           "pass --model") from None


def score_maps(kn, part: dict, config) -> dict[int, np.ndarray]:
    """{fact id: (prompts, layers, neurons) float32} attribution scores of every used prompt of every
    scored fact, with the run's attribution settings (what discovery computed before it kept the
    coarse sets)."""
    facts = [f for f in part["facts"] if not f["skipped"] and f["prompts"]]
    prompts = [p for f in facts for p in f["prompts"]]
    answers = [f["object"] for f in facts for _ in f["prompts"]]
    results = kn.attribute(prompts, answers, steps=config.steps, rule=config.rule,
                           precision=config.precision) if prompts else []
    maps, k = {}, 0
    for f in facts:
        n = len(f["prompts"])
        maps[f["id"]] = np.stack([r.scores.float().cpu().numpy() for r in results[k:k + n]])
        k += n
    return maps


def _half_precision(maps: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Each prompt's map divided by its largest |score| (so float16 keeps ~3 digits of every cell
    that matters; raw scores of 1e-6 would fall into float16's subnormals), plus the scales."""
    out = {}
    for i, m in maps.items():
        scale = np.abs(m).reshape(len(m), -1).max(1).astype(np.float32)
        scale[scale == 0] = 1.0
        out[f"fact_{i}"] = (m / scale[:, None, None]).astype(np.float16)
        out[f"scale_{i}"] = scale
    return out


def _from_half_precision(stored: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    return {int(k.split("_")[1]): v.astype(np.float32) * stored["scale_" + k.split("_")[1]][:, None, None]
            for k, v in stored.items() if k.startswith("fact_")}


def _maps_key(model_name, config, facts) -> str:
    what = [FORMAT, str(model_name), config.steps, config.rule, config.precision,
            [[f["id"], f["object"], f["prompts"]] for f in facts if not f["skipped"]]]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def explorer_data(run_dir, model=None, kn=None, log=print, heatmaps: str = "auto") -> dict:
    """Everything the page shows: the run's own tables plus the model part (computed once, cached).
    `heatmaps`: "full" (every score, recomputed once), "coarse" (the stored coarse sets only), or
    "auto" (full for runs of at most FULL_HEATMAP_PROMPTS prompts)."""
    if heatmaps not in HEATMAPS:
        raise KneuronError(f"heatmaps must be one of {', '.join(HEATMAPS)}, got {heatmaps!r}")
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise KneuronError(f"run directory not found: {run.path}")
    if not run.has_config:
        raise KneuronError(f"{run.path} is not a discovery run (no config.json)")
    if not run.is_finished:
        raise KneuronError(f"{run.path} is not a finished discovery run (no neurons.parquet)")
    config = run.config()
    table = run.neurons()
    missing = {"relation", "fact", "subject", "object", "layer", "index", "method"} - set(table.columns)
    if missing:
        raise KneuronError(f"{run.path}/neurons.parquet is from an older format (no column {sorted(missing)[0]!r}); "
                           "rerun discovery")
    part = _run_part(run)
    model_name = model or config.model
    names = sorted({n for f in part["facts"] for m in ("kn", "baseline") for n in f[m]})
    sentences, source = _sentences(part["data"])
    key = _key(str(model_name), names, sentences)
    cached = run.read_json(EXTRA) if run.has_extra(EXTRA) else None
    if cached is not None and cached.get("key") == key:
        model_part = cached
    else:
        if kn is None:
            if log:
                log(f"computing activations and projections with {model_name} (once; cached in {run.path}/extras)")
            kn = _load_model(model_name)
        model_part = _model_part(kn, part, sentences)
        model_part.update(key=key, model=str(model_name), sentence_source=source, sentences=len(sentences))
        run.write_json(EXTRA, model_part)
    n_prompts = sum(len(f["prompts"]) for f in part["facts"] if not f["skipped"])
    maps = None
    if heatmaps == "full" or (heatmaps == "auto" and n_prompts <= FULL_HEATMAP_PROMPTS):
        maps_key = _maps_key(model_name, config, part["facts"])
        stored = run.read_arrays(SCORES) if run.has_extra(SCORES) else {}
        if str(stored.get("key", "")) != maps_key:
            if kn is None:
                kn = _load_model(model_name)
            if log:
                log(f"computing the full attribution maps of {n_prompts} prompts with {model_name} "
                    f"(once; cached in {run.path}/extras)")
            stored = {"key": np.array(maps_key), **_half_precision(score_maps(kn, part, config))}
            run.write_arrays(SCORES, stored)
        maps = _from_half_precision(stored)  # the cached values, also on the first build: one page either way
    elif log and heatmaps == "auto":
        log(f"{n_prompts} prompts: heatmaps show the stored coarse sets only (--heatmaps full computes every score)")
    del part["data"]
    part.update(model_part=model_part, run_dir=str(run.path), maps=maps)
    return part

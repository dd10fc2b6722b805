"""A CounterFact-style benchmark of fact edits (`kneuron edit bench`).

Each case (`kneuron.data.counterfact`) asks to rewrite subject -> target_true into target_new.
Every editor is applied, measured and reverted on every case, beside the unedited model:

- `kn`: kneuron's default knowledge-neuron edit: the fact's refined neurons found on the case's
  `prompts` (IG, 20 steps, threshold 0.2, p 0.7, floor min(3, n)), then `fit_update` (signed
  direction, output embeddings, the smallest scale that makes target_new top-1 on those prompts,
  times a margin; declined when that strength exceeds `max_scale`).  `selectivity` first drops
  the neurons that fire as much for
  other subjects of the relation (`selective_neurons` on other cases' first prompts, never a
  subject the case measures).
- `kn_paper`: the same neurons, the paper's literal rule (v - 1*E[t] + 8*E[t'], norm-scaled, input
  embeddings, no sign).  The paper's 10% relation filter is left out: one case per fact.
- `kn_specific`: `kn`'s neurons, less those dropped by the effect-specific rule (`kneuron.selection.specific`): neurons whose
  suppression moves other relations' facts are dropped.  Judged on other cases' facts of other
  relations, never on the case's own measurement prompts (`others`).
- `random`: as many random neurons as `kn` edits, with the same scale, ratio and sign rule.
- `rome`: rank-one model editing (`kneuron.edits.rome`) on one layer's output projection.
- `kn_subject`: the subject-neuron edit (`kneuron.edits.subject`): ROME's insertion restricted to
  the value slots of the `subject_count` neurons that carry most of the subject's key at ROME's
  layer, with the case's edit prompts (all of them, like `kn`); v* optimised for `subject_steps` within
  `subject_clamp_norm` x the hidden norm, fitted to every context's key when `subject_context_fit` is set.
- `subject_random`: its control: the same k*, v* inserted through as many random neurons of the
  same layer (seeded per case), so that the choice of neurons is what is measured.

Metrics (first-token probabilities at the blank; every object is one token):
ES / PS = share of the case's edit prompts / unseen paraphrases where p(new) > p(true); NS = share
of neighbours (other subjects, same relation) where p(their answer) > p(new), also apart for the
neighbours whose answer is the case's true one (`NS_same`) and the rest (`NS_other`); S = harmonic mean of
ES, PS, NS; EM, PM = mean p(new) - p(true); NM = mean p(answer) - p(new); `success` (Dai et al.)
= top-1 is new on the edit prompts; `others_kept` = other relations' prompts whose top-1 is what
the unedited model said; `gen_new` = the greedy continuation of the first edit prompt starts with
the new answer (teacher forcing flatters; generation is the check); `entropy` = n-gram entropy of
the 50-token greedy generation from the first edit prompt (ROME's 2/3-gram mix); `entropy_generation` = its mean
over the case's `generation` beginnings (the first edit prompt's text and "SUBJECT is"; runs journaled
before it lack the column); `ppl` = perplexity of held-out BINGREL
sentences.  Fluency metrics are also given relative to the unedited model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from kneuron.data.counterfact import Case, load_cases, sample_cases
from kneuron.edits.subject import DEFAULT_CLAMP_NORM as SUBJECT_CLAMP_NORM
from kneuron.edits.subject import DEFAULT_CONTEXT_FIT as SUBJECT_CONTEXT_FIT
from kneuron.edits.subject import DEFAULT_COUNT as SUBJECT_COUNT
from kneuron.edits.subject import DEFAULT_STEPS as SUBJECT_STEPS
from kneuron.edits.update import FIT_MARGIN, MAX_SCALE, SELECTIVITY
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron
from kneuron.selection.config import DEFAULT as SELECTION
from kneuron.selection.specific import SPECIFIC_FRACTION

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

EDITORS = ("kn", "kn_paper", "kn_specific", "random", "rome", "kn_subject", "subject_random")
ROWS = ("unedited", *EDITORS)


@dataclass
class BenchConfig:
    """Everything that decides a benchmark's numbers; written to config.json and checked on resume."""

    model: str
    cases: str
    methods: list[str] = field(default_factory=lambda: ["kn", "kn_paper", "kn_specific", "random", "rome"])
    split: str = "all"  # tune | test | all
    limit: int | None = None
    sample: int | None = None
    exclude_tuned: str | None = None  # a cases file whose tune facts were left out (`--exclude-tuned`)
    seed: int = 0
    steps: int = 20
    threshold: float = SELECTION.threshold
    p: float = SELECTION.p_start  # one fact: a fixed p, the relation-level start
    min_prompts: int = SELECTION.min_prompts  # capped at a case's prompt count
    ratio: float = 1.0
    selectivity: float | None = SELECTIVITY
    contrast: int = 4
    margin: float = FIT_MARGIN
    max_scale: float = MAX_SCALE
    specific_fraction: float = SPECIFIC_FRACTION
    specific_facts: int = 6
    rome_layer: int | None = None
    subject_count: int = SUBJECT_COUNT
    subject_steps: int = SUBJECT_STEPS
    subject_context_fit: float | None = SUBJECT_CONTEXT_FIT
    subject_clamp_norm: float = SUBJECT_CLAMP_NORM  # bound on v*'s change (x the hidden norm)
    generation_tokens: int = 50
    ppl_sentences: int = 8
    bootstrap: int = 1000


# Settings added after benchmarks were committed, with the value those benchmarks ran under (kept
# even where today's default is the same, so that a later default cannot change what they resume under).
LEGACY = {"subject_steps": 20, "subject_context_fit": None, "subject_clamp_norm": 4.0}


def stored_settings(stored: dict) -> dict:
    """A benchmark's config.json with the settings added since it was written, at the value it ran
    under (`LEGACY`, else the default), so that an older run resumes only under what it measured."""
    out = dict(stored)
    for f in fields(BenchConfig):
        if f.name in LEGACY and f.name not in out:
            out[f.name] = LEGACY[f.name]
        elif f.name not in out and (f.default is not MISSING or f.default_factory is not MISSING):
            out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def ngram_entropy(tokens: Sequence[int]) -> float:
    """ROME's fluency measure: the entropies (bits) of the 2- and 3-gram frequencies, weighted 2/3 and 4/3, averaged."""
    weights = {2: 2 / 3, 3: 4 / 3}
    total = 0.0
    for n, w in weights.items():
        grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        count = sum(grams.values())
        if count == 0:
            continue
        freqs = np.array(list(grams.values()), dtype=float) / count
        total += w * float(-(freqs * np.log2(freqs)).sum())
    return total / sum(weights.values())


def harmonic(values: Sequence[float]) -> float:
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return math.nan
    if any(v <= 0 for v in vals):
        return 0.0
    return len(vals) / sum(1 / v for v in vals)


def bootstrap_interval(values: np.ndarray, reps: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean over cases."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# summarized as ratios of means (see summarize)
RELATIVE = {"entropy_rel": "entropy", "entropy_generation_rel": "entropy_generation", "ppl_rel": "ppl"}


def ratio_of_means(edited: np.ndarray, unedited: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """sum(edited) / sum(unedited) over the cases where both are finite, with a bootstrap 95% interval
    (cases resampled together)."""
    keep = np.isfinite(edited) & np.isfinite(unedited)
    e, u = edited[keep], unedited[keep]
    if not len(e) or u.sum() <= 0:
        return math.nan, math.nan, math.nan
    value = float(e.sum() / u.sum())
    if len(e) < 2:
        return value, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(e), size=(reps, len(e)))
    den = u[idx].sum(1)
    ratios = np.where(den > 0, e[idx].sum(1) / np.where(den > 0, den, 1.0), np.nan)
    return value, float(np.nanpercentile(ratios, 2.5)), float(np.nanpercentile(ratios, 97.5))


def model_fingerprint(kn: KnowledgeModel) -> str:
    """sha256 over every parameter's bytes: the revert check."""
    h = hashlib.sha256()
    for name, t in kn.model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Measure:
    """The case's measurements on the model as it is now (edited or not)."""

    def __init__(self, kn: KnowledgeModel, ppl_texts: Sequence[str], generation_tokens: int):
        self.kn = kn
        self.ppl_texts = list(ppl_texts)
        self.generation_tokens = generation_tokens

    @torch.no_grad()
    def probs(self, prompts: Sequence[str]) -> torch.Tensor:
        if not prompts:
            return torch.zeros(0, 1)
        return torch.softmax(self.kn.blank_logits(list(prompts)).double(), -1)

    def generate(self, prompt: str) -> list[int]:
        return [] if self.kn.is_masked else self.kn.generate(prompt, self.generation_tokens)

    @torch.no_grad()
    def perplexity(self) -> float:
        kn = self.kn
        if kn.is_masked or not self.ppl_texts:
            return math.nan
        nll, count = 0.0, 0
        for text in self.ppl_texts:
            ids = kn.tokenizer(text, return_tensors="pt")["input_ids"][:, :64].to(kn.device)
            if ids.shape[1] < 2:
                continue
            logits = kn.model(ids).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])
            nll -= float(lp.sum())
            count += ids.shape[1] - 1
        return math.exp(nll / count) if count else math.nan

    def case(self, case, base: dict | None) -> dict:
        """One row of metrics; `base` (the unedited row) gives the relative fluency and the kept top-1."""
        kn = self.kn
        new, true = kn.answer_id(case.target_new), kn.answer_id(case.target_true)
        edit_p = self.probs(case.prompts)
        para_p = self.probs(case.paraphrases)
        neigh = case.neighbours
        neigh_p = self.probs([x.prompt for x in neigh])
        neigh_ans = [kn.answer_id(x.answer) for x in neigh]
        other_p = self.probs([x.prompt for x in case.others])
        row = {
            "ES": float((edit_p[:, new] > edit_p[:, true]).double().mean()),
            "PS": float((para_p[:, new] > para_p[:, true]).double().mean()) if len(case.paraphrases) else math.nan,
            "NS": float(np.mean([float(neigh_p[i, a] > neigh_p[i, new]) for i, a in enumerate(neigh_ans)]))
            if neigh else math.nan,
            "EM": float((edit_p[:, new] - edit_p[:, true]).mean()),
            "PM": float((para_p[:, new] - para_p[:, true]).mean()) if len(case.paraphrases) else math.nan,
            "NM": float(np.mean([float(neigh_p[i, a] - neigh_p[i, new]) for i, a in enumerate(neigh_ans)]))
            if neigh else math.nan,
            "success": float((edit_p.argmax(-1) == new).double().mean()),
            "para_success": float((para_p.argmax(-1) == new).double().mean()) if len(case.paraphrases) else math.nan,
            "p_new": float(edit_p[:, new].mean()), "p_true": float(edit_p[:, true].mean()),
        }
        # CounterFact stresses the neighbours that share the true answer: an edit that rewrites the
        # answer rather than the fact flips those first
        for name, keep in (("NS_same", True), ("NS_other", False)):
            part = [float(neigh_p[i, a] > neigh_p[i, new]) for i, a in enumerate(neigh_ans) if (a == true) == keep]
            row[name] = float(np.mean(part)) if part else math.nan
        row["S"] = harmonic([row["ES"], row["PS"], row["NS"]])
        top_other = other_p.argmax(-1).tolist() if len(case.others) else []
        row["_others_top1"] = top_other
        if base is not None and top_other:
            row["others_kept"] = float(np.mean([a == b for a, b in zip(top_other, base["_others_top1"])]))
        elif top_other:
            row["others_kept"] = 1.0
        else:
            row["others_kept"] = math.nan
        if not kn.is_masked:
            gen = self.generate(case.prompts[0])
            row["gen_new"] = float(bool(gen) and gen[0] == new)
            row["entropy"] = ngram_entropy(gen)
            # every fluency beginning of the case ("SUBJECT is" too), as ROME averages its generation
            # prompts; the first one is the edit prompt's text, whose generation is already there
            gens, entropies = {tuple(kn.encode(case.prompts[0]).ids): gen}, []
            for text in case.generation:
                ids = tuple(kn.encode(text).ids)
                if ids not in gens:
                    gens[ids] = self.generate(text)
                entropies.append(ngram_entropy(gens[ids]))
            row["entropy_generation"] = float(np.mean(entropies)) if entropies else math.nan
            row["ppl"] = self.perplexity()  # NaN without held-out sentences
        else:
            row["gen_new"] = row["entropy"] = row["entropy_generation"] = row["ppl"] = math.nan
        for rel, raw in RELATIVE.items():
            if base is None:
                row[rel] = 1.0
            else:
                row[rel] = row[raw] / base[raw] if base.get(raw) else math.nan
        return row


def held_out_sentences(count: int, seed: int, data_dir: Path | None = None) -> list[str]:
    """`count` BINGREL sentences drawn seeded (the fluency check's text; never used to choose anything)."""
    from kneuron.data.bingrel import read_bingrel_file
    from kneuron.paths import default_data_dir

    root = Path(data_dir) if data_dir else default_data_dir() / "bingrel"
    files = sorted(root.glob("final_distant_allbags_*_new.json")) if root.is_dir() else []
    pool = []
    for f in files:
        for bag in read_bingrel_file(f):
            pool.extend(s for s in (*bag.th, *bag.h) if isinstance(s, str))
    pool = sorted(set(s for s in pool if 40 <= len(s) <= 300))
    if not pool:
        return []
    rng = random.Random(seed)
    return rng.sample(pool, min(count, len(pool)))


class Editors:
    """Builds each method's edit for a case; neurons are found once per case and shared."""

    def __init__(self, kn: KnowledgeModel, config: BenchConfig, cases: Sequence):
        self.kn, self.config, self.cases = kn, config, cases
        self._neurons: dict[int, list[Neuron]] = {}
        self._kn_edit: dict[int, object] = {}
        self._kn_tried: set[int] = set()
        self._selective: dict[int, list[Neuron]] = {}
        self._rome: tuple[int, object] | None = None  # (case_id, RomeUpdate): the case in hand only

    def neurons(self, case) -> list[Neuron]:
        if case.case_id not in self._neurons:
            c = self.config
            n = len(case.prompts)
            self._neurons[case.case_id] = self.kn.find_neurons(case.prompts, case.target_true, threshold=c.threshold,
                                                               p=c.p, min_prompts=min(c.min_prompts, n), steps=c.steps)
        return self._neurons[case.case_id]

    def contrast(self, case) -> list[str]:
        """Other subjects of the case's relation for the selectivity filter: other cases' first prompts,
        never a subject that the case measures as a neighbour."""
        measured = " ".join(x.prompt for x in case.neighbours)
        pool = [c for c in self.cases if c.relation == case.relation and c.subject != case.subject
                and c.subject not in measured]
        rng = random.Random(f"{self.config.seed}:{case.case_id}:contrast")
        return [c.prompts[0] for c in rng.sample(pool, min(self.config.contrast, len(pool)))]

    def edit_neurons(self, case) -> list[Neuron]:
        """kn's neurons: the refined set, less the neurons that fire as much for other subjects."""
        from kneuron.edits import selective_neurons

        if case.case_id not in self._selective:  # kn and kn_specific both start from these
            refined = self.neurons(case)
            self._selective[case.case_id] = refined if self.config.selectivity is None else selective_neurons(
                self.kn, refined, case.prompts, self.contrast(case), self.config.selectivity)
        return self._selective[case.case_id]

    def judging_facts(self, case) -> list[tuple[list[str], str]]:
        """Facts of other relations for the specific rule: other cases' own prompts, none of whose
        answers or prompts the case measures its `others` on."""
        measured = {x.prompt for x in case.others} | {x.answer for x in case.others}
        pool = [c for c in self.cases if c.relation != case.relation and c.target_true not in measured
                and not measured.intersection(c.prompts)]
        rng = random.Random(f"{self.config.seed}:{case.case_id}:judge")
        picked = rng.sample(pool, min(self.config.specific_facts, len(pool)))
        return [(list(c.prompts[:2]), c.target_true) for c in picked]

    def subject_update(self, case):
        """ROME's k*, v* for the case's edit prompts, shared by kn_subject and its random control."""
        from kneuron.edits.rome import compute_rome

        if self._rome is None or self._rome[0] != case.case_id:
            c = self.config
            self._rome = (case.case_id, compute_rome(self.kn, case.subject, list(case.prompts), case.target_new,
                                                     layer=c.rome_layer, steps=c.subject_steps,
                                                     clamp_norm=c.subject_clamp_norm, seed=c.seed))
        return self._rome[1]

    def _fitted(self, case, neurons):
        """kn's fitted edit of `neurons`, or None (declined) when they cannot carry it within max_scale."""
        from kneuron.edits import fit_update

        c = self.config
        edit = fit_update(self.kn, neurons, case.target_true, case.target_new, case.prompts, ratio=c.ratio,
                          margin=c.margin, max_scale=c.max_scale)
        info = {"neurons": len(neurons), "scale": edit.info["scale"], "reached": edit.info["reached"]}
        if not edit.info["reached"]:
            return None, {**info, "declined": 1}
        return edit, info

    def build(self, method: str, case):
        from kneuron.edits import plan_update

        kn, c = self.kn, self.config
        if method == "kn":
            self._kn_tried.add(case.case_id)
            neurons = self.edit_neurons(case)
            if not neurons:
                return None, {"neurons": 0}
            edit, info = self._fitted(case, neurons)
            if edit is not None:
                self._kn_edit[case.case_id] = edit
            return edit, info
        if method == "kn_paper":
            neurons = self.neurons(case)
            if not neurons:
                return None, {"neurons": 0}
            edit = plan_update(kn, neurons, case.target_true, case.target_new, direction="paper", embedding="input")
            return edit, {"neurons": len(neurons)}
        if method == "kn_specific":
            from kneuron.interventions import SpecificityTask, effect_specific_sets

            own = self.edit_neurons(case)
            other = [(p, a) for ps, a in self.judging_facts(case) for p in ps]
            task = SpecificityTask(own, [(p, case.target_true) for p in case.prompts], other)
            neurons = effect_specific_sets(kn, [task], c.specific_fraction)[0] if own else []
            if not neurons:
                return None, {"neurons": 0}
            return self._fitted(case, neurons)
        if method == "random":
            ref = self._kn_edit.get(case.case_id)
            if ref is None and case.case_id not in self._kn_tried:
                self.build("kn", case)
                ref = self._kn_edit.get(case.case_id)
            if ref is None:
                return None, {"neurons": 0, "declined": 1}  # kn made no edit, so there is no strength to copy
            rng = random.Random(f"{c.seed}:{case.case_id}:random")
            total = kn.num_layers * kn.num_neurons
            picks = rng.sample(range(total), len(ref.neurons))
            neurons = [Neuron(i // kn.num_neurons, i % kn.num_neurons) for i in picks]
            scale = ref.info["scale"]
            edit = plan_update(kn, neurons, case.target_true, case.target_new, prompts=case.prompts,
                               lambda1=scale, lambda2=c.ratio * scale)
            return edit, {"neurons": len(neurons), "scale": scale}
        if method == "rome":
            from kneuron.edits.rome import plan_rome

            edit = plan_rome(kn, case.subject, [case.prompts[0]], case.target_new, layer=c.rome_layer,
                             seed=c.seed)  # ROME edits with the one requested prompt, as in CounterFact
            return edit, {"layer": edit.info.get("layer")}
        if method in ("kn_subject", "subject_random"):
            from kneuron.edits.subject import subject_edit

            pick = None
            if method == "subject_random":
                rng = random.Random(f"{c.seed}:{case.case_id}:subject_random")
                pick = rng.sample(range(kn.num_neurons), min(c.subject_count, kn.num_neurons))
            edit = subject_edit(kn, self.subject_update(case), c.subject_count, seed=c.seed, neurons=pick,
                                context_fit=c.subject_context_fit)
            return edit, {"neurons": len(edit.neurons), "layer": edit.info.get("layer"),
                          "key_share": edit.info["key_share"]}
        raise KneuronError(f"unknown edit method {method!r} (choose from {', '.join(EDITORS)})")


def check_methods(methods: Sequence[str]) -> list[str]:
    out = []
    for m in methods:
        if m not in EDITORS:
            raise KneuronError(f"unknown edit method {m!r} (choose from {', '.join(EDITORS)})")
        if m not in out:
            out.append(m)
    if not out:
        raise KneuronError("no edit method given")
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N), 1 <= K <= N: the --shard of `edit bench` and of benchmarks/tune_edit.py."""
    if text is None:
        return None
    k, slash, n = text.partition("/")
    if slash and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n):
        return int(k), int(n)
    raise KneuronError(f"--shard must be K/N with 1 <= K <= N (e.g. 1/2), got {text!r}")


def shard_indices(count: int, shard: tuple[int, int] | None) -> range:
    """The positions among `count` items that shard (K, N) takes: K-1, K-1+N, ...; every one without a shard."""
    return range(count) if shard is None else range(shard[0] - 1, count, shard[1])


def select_cases(cases: Sequence[Case], *, split: str = "all", tuned: Sequence[Case] = (), sample: int | None = None,
                 seed: int = 0, limit: int | None = None) -> list[Case]:
    """The cases a benchmark measures, in file order: those of `split` (tune | test | all), less the facts
    (relation, subject) of `tuned`'s tune cases (`--exclude-tuned`), then a seeded `sample` over the
    relations, then the first `limit`."""
    if split not in ("tune", "test", "all"):
        raise KneuronError(f"--split must be tune, test or all, got {split!r}")
    chosen = [c for c in cases if split == "all" or c.split == split]
    left_out = {c.fact for c in tuned if c.split == "tune"}
    chosen = [c for c in chosen if c.fact not in left_out]
    if sample is not None and sample < len(chosen):
        chosen = sample_cases(chosen, sample, seed)
    return chosen[:limit]


def measured_cases(run_dir: Path) -> list[Case]:
    """The cases the benchmark in `run_dir` measures (all shards), rebuilt from its config.json: its
    cases file (and any --exclude-tuned file) are read from beside the run folder, as the run read them."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise KneuronError(f"{run_dir}: no config.json, so not an edit bench run")
    cfg = stored_settings(json.loads(cfg_path.read_text(encoding="utf-8")))
    files = {}
    for name in ("cases", "exclude_tuned"):
        if isinstance(cfg.get(name), list):
            raise KneuronError(f"{cfg_path}: a combined run of several cases files ({', '.join(cfg[name])})")
        if cfg.get(name):
            path = run_dir.parent / cfg[name]
            if not path.is_file():
                raise KneuronError(f"{cfg_path}: its {name} file {cfg[name]} is not beside the run folder")
            files[name] = load_cases(path)
    return select_cases(files["cases"], split=cfg["split"], tuned=files.get("exclude_tuned", ()),
                        sample=cfg["sample"], seed=cfg["seed"], limit=cfg["limit"])


def run_bench(kn: KnowledgeModel, cases: Sequence, config: BenchConfig, out_dir: Path, *,
              progress: Callable[[int, int], None] | None = None,
              log: Callable[[str], None] | None = None, shard: tuple[int, int] | None = None) -> pd.DataFrame | None:
    """Apply, measure and revert every method on every case; journaled in out_dir/journal.jsonl.

    Returns the per-(case, method) rows.  A rerun with the same config resumes.  `shard` = (k, n),
    1 <= k <= n, measures only cases k, k + n, ... of `cases`: n processes (or machines sharing the
    directory) share one run and its journal, and the rows are those of one process, since every
    case is measured as it would be alone (the specific rule's judging facts still come from all
    `cases`).  A shard returns None while another shard's cases are missing; the last to finish
    returns every row.
    """
    from kneuron.runs.store import FactLog, locked, write_json_atomic

    if shard is not None:
        k_shard, n_shard = shard
        if not 1 <= int(k_shard) <= int(n_shard):
            raise KneuronError(f"shard must be k/n with 1 <= k <= n, got {k_shard}/{n_shard}")

    methods = check_methods(config.methods)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "config.json"
    cfg = asdict(config)
    if cfg_path.exists():
        old = stored_settings(json.loads(cfg_path.read_text(encoding="utf-8")))
        if old != cfg:
            diff = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
            raise KneuronError(f"{out_dir} holds a benchmark with other settings ({', '.join(diff)}); "
                               "use a new --out directory")
    else:
        write_json_atomic(cfg_path, cfg)
    journal = FactLog(out_dir / "journal.jsonl", key="key")
    texts = held_out_sentences(config.ppl_sentences, config.seed)
    measure = Measure(kn, texts, config.generation_tokens)
    editors = Editors(kn, config, cases)
    todo = len(cases)
    mine = shard_indices(todo, shard)
    try:
        for done, k in enumerate(mine, start=1):
            case = cases[k]
            keys = {m: f"{case.case_id}:{m}" for m in ("unedited", *methods)}
            if all(key in journal for key in keys.values()):
                if progress:
                    progress(done, len(mine))
                continue
            check_full = k in (0, todo - 1)
            fp0 = model_fingerprint(kn) if check_full else None
            base_key = keys["unedited"]
            if base_key in journal:
                base = journal.records[base_key]
            else:
                t = time.perf_counter()
                base = measure.case(case, None)
                base.update({"key": base_key, "case_id": case.case_id, "method": "unedited",
                             "relation": case.relation, "split": case.split, "seconds": time.perf_counter() - t})
                journal.append(base)
            for m in methods:
                if keys[m] in journal:
                    continue
                t = time.perf_counter()
                row = {"key": keys[m], "case_id": case.case_id, "method": m, "relation": case.relation,
                       "split": case.split}
                try:
                    edit, info = editors.build(m, case)
                except KneuronError as e:
                    edit, info = None, {"error": str(e)}
                row.update(info)
                row["edit_seconds"] = time.perf_counter() - t
                if edit is None:
                    row.update({"edited": 0, **{k: v for k, v in base.items()
                                               if k not in ("key", "method", "seconds", "case_id", "relation",
                                                            "split", "_others_top1")}})
                    row["others_kept"] = 1.0
                else:
                    row["edited"] = 1
                    edit.apply(kn)
                    try:
                        row.update(measure.case(case, base))
                    finally:
                        edit.undo()
                    if not all(torch.equal(s, b.to(s.dtype)) for s, b in
                               zip(_slots(kn, edit.neurons), edit.base_values)):
                        raise KneuronError(f"case {case.case_id}, {m}: the revert is not bit-exact")
                row["seconds"] = time.perf_counter() - t
                row.pop("_others_top1", None)
                journal.append(row)
            if check_full:
                fp1 = model_fingerprint(kn)
                if fp0 != fp1:
                    raise KneuronError(f"case {case.case_id}: the model differs after reverting every edit")
                journal_note = out_dir / "revert_checks.json"
                with locked(journal.path):  # another shard may write its own check
                    checks = json.loads(journal_note.read_text()) if journal_note.exists() else {}
                    checks[str(case.case_id)] = {"before": fp0, "after": fp1, "equal": fp0 == fp1}
                    write_json_atomic(journal_note, checks)
                if log:
                    log(f"case {case.case_id}: every parameter bit-identical after the reverts (sha256 {fp1[:12]})")
            if progress:
                progress(done, len(mine))
    finally:
        journal.close()
    if shard is not None:  # the other shards' rows: read again, complete only when every shard is done
        journal = FactLog(out_dir / "journal.jsonl", key="key")
        if not all(f"{c.case_id}:{m}" in journal for c in cases for m in ("unedited", *methods)):
            return None
    rows = [r for r in journal.records.values()]
    frame = pd.DataFrame(rows).drop(columns=["_others_top1"], errors="ignore")
    return frame


def _slots(kn: KnowledgeModel, neurons):
    from kneuron.edits.value_slots import slot

    return [slot(kn, n) for n in neurons]


METRICS = ("S", "ES", "PS", "NS", "NS_same", "NS_other", "EM", "PM", "NM", "success", "para_success", "others_kept", "gen_new",
           "entropy_rel", "entropy_generation_rel", "ppl_rel")


def summarize(cases: pd.DataFrame, reps: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method and split: the mean of every metric over cases, with a bootstrap 95% interval.

    S is the harmonic mean of the mean ES, PS and NS (as ROME reports it), its interval from the
    same bootstrap resamples of cases.  Entropy and perplexity relative to the unedited model are
    ratios of means over the same cases (sum edited / sum unedited), not means of per-case ratios:
    one case whose unedited generation is a repetition loop (entropy near 0) would otherwise
    dominate the mean (on Gemma 3 one such case gave random neurons a mean ratio of 1.56)."""
    rows = []
    base = cases[cases["method"] == "unedited"].drop_duplicates("case_id").set_index("case_id") \
        if "method" in cases and "case_id" in cases else None
    for (split, method), g in cases.groupby(["split", "method"], sort=False):
        row = {"split": split, "method": method, "cases": len(g),
               "edited": float(g["edited"].mean()) if "edited" in g else 1.0}
        for m in METRICS:
            if m not in g or m == "S":
                continue
            raw = RELATIVE.get(m)
            if raw and base is not None and raw in g and raw in base and g["case_id"].isin(base.index).all():
                row[m], row[f"{m}_lo"], row[f"{m}_hi"] = ratio_of_means(
                    g[raw].astype(float).to_numpy(), base.loc[g["case_id"], raw].astype(float).to_numpy(), reps, seed)
                continue
            v = g[m].astype(float).to_numpy()
            row[m] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            lo, hi = bootstrap_interval(v, reps, seed)
            row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
        row["S"] = harmonic([row.get("ES", math.nan), row.get("PS", math.nan), row.get("NS", math.nan)])
        rng = np.random.default_rng(seed)
        e, p, n = (g[k].astype(float).to_numpy() for k in ("ES", "PS", "NS"))
        ss = []
        for _ in range(reps if len(g) > 1 else 0):
            i = rng.integers(0, len(g), len(g))
            ss.append(harmonic([np.nanmean(e[i]), np.nanmean(p[i]), np.nanmean(n[i])]))
        row["S_lo"], row["S_hi"] = (float(np.nanpercentile(ss, 2.5)), float(np.nanpercentile(ss, 97.5))) \
            if ss else (math.nan, math.nan)
        if "seconds" in g:
            row["seconds"] = float(g["seconds"].mean())
        for extra in ("neurons", "scale"):
            if extra in g:
                row[extra] = float(pd.to_numeric(g[extra], errors="coerce").mean())
        rows.append(row)
    order = {m: i for i, m in enumerate(ROWS)}
    out = pd.DataFrame(rows)
    if len(out):
        out = out.sort_values(["split", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    return out.reset_index(drop=True)


def write_outputs(out_dir: Path, cases: pd.DataFrame, methods: pd.DataFrame, header: str) -> list[Path]:
    """cases.csv, methods.csv, a figure and report.md (atomic writes)."""
    from kneuron.runs.store import write_atomic

    out_dir = Path(out_dir)
    write_atomic(out_dir / "cases.csv", lambda p: cases.to_csv(p, index=False))
    write_atomic(out_dir / "methods.csv", lambda p: methods.to_csv(p, index=False))
    fig_path = out_dir / "methods.png"
    _figure(methods, fig_path)
    lines = [header, "", "| split | method | cases | S | ES | PS | NS | success | others kept | gen. new | "
             "entropy rel. | entropy rel., every beginning | ppl rel. | neurons |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(r, k):
        v = r.get(k, math.nan)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        lo, hi = r.get(f"{k}_lo", math.nan), r.get(f"{k}_hi", math.nan)

        def num(x):  # a wrecked model's perplexity factor (1e30) in two digits, not thirty-one
            return f"{x:.1e}" if abs(x) >= 1e4 else f"{x:.2f}"

        if isinstance(lo, float) and not math.isnan(lo):
            return f"{num(v)} [{num(lo)}, {num(hi)}]"
        return num(v)

    for _, r in methods.iterrows():
        r = r.to_dict()
        lines.append(f"| {r['split']} | {r['method']} | {r['cases']} | " + " | ".join(
            cell(r, k) for k in ("S", "ES", "PS", "NS", "success", "others_kept", "gen_new", "entropy_rel",
                                 "entropy_generation_rel", "ppl_rel")) + f" | {cell(r, 'neurons')} |")
    write_atomic(out_dir / "report.md", lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    return [out_dir / "cases.csv", out_dir / "methods.csv", fig_path, out_dir / "report.md"]


def _figure(methods: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(methods["split"])) if len(methods) else []
    fig, axes = plt.subplots(1, max(len(splits), 1), figsize=(6 * max(len(splits), 1), 3.6), squeeze=False)
    keys = ("S", "ES", "PS", "NS", "others_kept")
    for ax, split in zip(axes[0], splits):
        g = methods[methods["split"] == split]
        width = 0.8 / max(len(g), 1)
        for j, (_, r) in enumerate(g.iterrows()):
            xs = np.arange(len(keys)) + j * width
            vals = [r.get(k, math.nan) for k in keys]
            err = [[max(0.0, r.get(k, 0) - r.get(f"{k}_lo", r.get(k, 0))) for k in keys],
                   [max(0.0, r.get(f"{k}_hi", r.get(k, 0)) - r.get(k, 0)) for k in keys]]
            err = np.nan_to_num(np.array(err, dtype=float))
            ax.bar(xs, vals, width, yerr=err, label=r["method"], capsize=2)
        ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2)
        ax.set_xticklabels(keys)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{split} split")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)

"""Knowledge neurons across languages: which neurons hold a fact in every language, and which in one.

The paper names this as future work; AMIG (Chen et al., AAAI 2024) answered it with the
intersection of a fact's per-language neuron sets.  Here every language's prompts are attributed
with the same exact integrated gradients, refined per language with the paper's sharing threshold
(AMIG's code skips it), and `shared` comes in two definitions:

* `"intersection"` (AMIG): neurons in every language's refined set.  A neuron must pass the
  sharing threshold max(p x n, min_prompts) in each language separately, so with few prompts per
  language one weak language empties the set.
* `"pooled"` (the default): each language's *share* of prompts whose coarse set holds the neuron,
  averaged over languages (every language weighs the same whatever its number of prompts); kept
  when that mean reaches p and the neuron is in at least one coarse set of every language.  It
  asks "does this neuron carry the fact across the languages?" rather than "does it pass the
  threshold in each language on its own?".  The README compares both on the fact worlds.

`specific[lang]`: the language's refined neurons that are neither shared nor in any other
language's refined set.  `cross_lingual_effects` measures what suppressing one language's neurons
does to the others.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from kneuron.attribution.result import AttributionResult
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron
from kneuron.selection import KN_THRESHOLD, coarse_neurons, refine
from kneuron.selection.config import DEFAULT as SELECTION
from kneuron.selection.controls import random_like

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

SHARED_METHODS = ("pooled", "intersection")


@dataclass
class MultilingualNeurons:
    """What `find_multilingual_neurons` found for one fact."""

    answers: dict[str, str]
    prompts: dict[str, list[str]]
    by_language: dict[str, list[Neuron]]
    shared: list[Neuron]
    specific: dict[str, list[Neuron]]
    shares: dict[Neuron, dict[str, float]]  # neuron -> language -> share of that language's coarse sets
    results: dict[str, list[AttributionResult]] = field(repr=False, default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.prompts)

    def table(self) -> pd.DataFrame:
        """One row per neuron of any set: where it belongs and its share of each language's prompts."""
        rows = []
        every = list(dict.fromkeys([*self.shared, *(n for ns in self.by_language.values() for n in ns)]))
        for n in every:
            row = {"neuron": str(n), "layer": n.layer, "index": n.index, "shared": n in self.shared,
                   "in_languages": ",".join(lang for lang in self.languages if n in self.by_language[lang]),
                   "specific_to": next((lang for lang, ns in self.specific.items() if n in ns), "")}
            row.update({f"share_{lang}": round(self.shares.get(n, {}).get(lang, 0.0), 4) for lang in self.languages})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        def ids(ns):
            return [[n.layer, n.index] for n in ns]

        return {"answers": self.answers, "prompts": self.prompts, "settings": self.settings,
                "by_language": {lang: ids(ns) for lang, ns in self.by_language.items()},
                "shared": ids(self.shared), "specific": {lang: ids(ns) for lang, ns in self.specific.items()}}


def _check_inputs(prompts_by_language, answers) -> tuple[dict[str, list[str]], dict[str, str]]:
    if not isinstance(prompts_by_language, Mapping) or not prompts_by_language:
        raise KneuronError("prompts_by_language must be a non-empty language -> prompts map")
    prompts = {}
    for lang, ps in prompts_by_language.items():
        ps = [ps] if isinstance(ps, str) else list(ps)
        if not ps:
            raise KneuronError(f"language {lang!r} has no prompts")
        prompts[str(lang)] = ps
    if isinstance(answers, str):
        answers = {lang: answers for lang in prompts}
    missing = [lang for lang in prompts if lang not in answers]
    if missing:
        raise KneuronError(f"no answer for language(s) {', '.join(missing)}")
    return prompts, {lang: answers[lang] for lang in prompts}


def language_shares(coarse_by_language: Mapping[str, Sequence[Sequence[Neuron]]]) -> dict[Neuron, dict[str, float]]:
    """For every neuron in any coarse set: the share of each language's prompts whose coarse set holds it."""
    shares: dict[Neuron, dict[str, float]] = {}
    for lang, sets in coarse_by_language.items():
        counts = Counter(Neuron(*n) for s in sets for n in s)
        for n, c in counts.items():
            shares.setdefault(n, {})[lang] = c / len(sets)
    return shares


def shared_neurons(by_language: Mapping[str, Sequence[Neuron]], shares: Mapping[Neuron, Mapping[str, float]],
                   method: str = "pooled", p: float = SELECTION.p_start) -> list[Neuron]:
    """The language-independent neurons by `method` ("pooled" or "intersection", see the module)."""
    languages = list(by_language)
    if method == "intersection":
        first, *rest = (list(by_language[lang]) for lang in languages)
        return [n for n in first if all(n in other for other in rest)]
    if method == "pooled":
        out = []
        for n, per in shares.items():
            if all(per.get(lang, 0.0) > 0 for lang in languages) and \
                    sum(per.get(lang, 0.0) for lang in languages) / len(languages) >= p:
                out.append(n)
        return sorted(out)
    raise KneuronError(f"unknown shared-neuron method {method!r}; use one of {', '.join(SHARED_METHODS)}")


def find_multilingual_neurons(kn: KnowledgeModel, prompts_by_language, answers, *, shared: str = "pooled",
                              threshold: float = KN_THRESHOLD, p: float = SELECTION.p_start,
                              min_prompts: int = SELECTION.min_prompts,
                              steps: int = 20, rule: str = "riemann_left") -> MultilingualNeurons:
    """Per-language refined neurons of one fact, its language-independent (`shared`) and language-specific ones.

    `answers`: one answer for all languages, or a language -> answer map.  Refinement per language
    is the paper's (coarse sets at `threshold` x max, kept by >= max(p x n, min_prompts) prompts).
    """
    if shared not in SHARED_METHODS:
        raise KneuronError(f"unknown shared-neuron method {shared!r}; use one of {', '.join(SHARED_METHODS)}")
    prompts, answers = _check_inputs(prompts_by_language, answers)
    results = {lang: kn.attribute(ps, answers[lang], steps=steps, rule=rule) for lang, ps in prompts.items()}
    coarse = {lang: [coarse_neurons(r.scores, threshold) for r in rs] for lang, rs in results.items()}
    by_language = {lang: refine(sets, p, min_prompts) for lang, sets in coarse.items()}
    shares = language_shares(coarse)
    common = shared_neurons(by_language, shares, shared, p)
    specific = {}
    for lang, ns in by_language.items():
        others = {n for other, ms in by_language.items() if other != lang for n in ms}
        specific[lang] = [n for n in ns if n not in others and n not in common]
    settings = {"model": kn.name, "shared": shared, "threshold": threshold, "p": p, "min_prompts": min_prompts,
                "steps": steps, "rule": rule}
    return MultilingualNeurons(answers, prompts, by_language, common, specific, shares, results, settings)


# --------------------------------------------------------------------------------------------
# Cross-lingual effects


def suppression_sets(kn: KnowledgeModel, found: MultilingualNeurons, seed: int = 0,
                     extra: Mapping[str, Sequence[Neuron]] | None = None) -> dict[str, dict[str, list[Neuron]]]:
    """The neuron sets whose suppression the matrix measures: each language's, `shared` (and any
    `extra` named sets), and random neurons of the same counts (seeded; each row draws its own)."""
    kn_sets = {**{lang: list(ns) for lang, ns in found.by_language.items()}, "shared": list(found.shared),
               **{name: list(ns) for name, ns in (extra or {}).items()}}
    names = list(kn_sets)
    random_sets = random_like([kn_sets[n] for n in names], kn.num_layers, kn.num_neurons, seed=seed)
    return {"kn": kn_sets, "random": dict(zip(names, random_sets))}


def cross_lingual_effects(kn: KnowledgeModel, found: MultilingualNeurons, seed: int = 0, batch: int = 256,
                          extra: Mapping[str, Sequence[Neuron]] | None = None,
                          other_fact: tuple[Mapping[str, Sequence[str]], Mapping[str, str]] | None = None) -> pd.DataFrame:
    """Suppress each row's set (a language's neurons, `shared`, or as many random neurons) and measure
    the gold probability of every language's prompts; all (set, prompt) pairs in batched passes.

    `other_fact` = (prompts by language, answers) of another fact: the knowledge neurons' sets are
    also measured there (control "kn@other": a neuron that moves every fact carries none in particular).
    One row per (control, suppressed, language, prompt): `p` before, `p_suppressed` after.
    """
    from kneuron.interventions.activations import scaled_probabilities

    sets = suppression_sets(kn, found, seed, extra)
    targets = {"kn": (found.prompts, found.answers), "random": (found.prompts, found.answers)}
    if other_fact is not None:
        sets["kn@other"] = sets["kn"]
        targets["kn@other"] = other_fact
    prompts, answers, neuron_sets, rows = [], [], [], []
    for control, named in sets.items():
        by_lang, golds = targets[control]
        for name, neurons in named.items():
            for lang, ps in by_lang.items():
                for prompt in ps:
                    prompts.append(prompt)
                    answers.append(golds[lang])
                    neuron_sets.append(neurons)
                    rows.append({"control": control, "suppressed": name, "neurons": len(neurons),
                                 "language": lang, "prompt": prompt, "answer": golds[lang]})
    flat = list(dict.fromkeys(zip(prompts, answers)))
    base = kn.probabilities([q for q, _ in flat], [a for _, a in flat])
    before = {key: float(v) for key, v in zip(flat, base)}
    after = scaled_probabilities(kn, prompts, answers, neuron_sets, 0.0, batch=batch)
    for row, value in zip(rows, after):
        row["p"] = before[(row["prompt"], row["answer"])]
        row["p_suppressed"] = float(value)
    return pd.DataFrame(rows)


def effect_matrix(effects: pd.DataFrame, control: str = "kn") -> pd.DataFrame:
    """Rows: the suppressed set; columns: the language measured; value: the paper's ratio of means,
    (mean p_suppressed - mean p) / mean p, pooled over every fact's prompts in `effects`."""
    sub = effects[effects["control"] == control]
    grouped = sub.groupby(["suppressed", "language"], sort=False)[["p", "p_suppressed"]].mean()
    ratio = (grouped["p_suppressed"] - grouped["p"]) / grouped["p"]
    matrix = ratio.unstack("language")
    order = list(dict.fromkeys(sub["suppressed"]))
    return matrix.reindex(index=order, columns=list(dict.fromkeys(sub["language"])))


# --------------------------------------------------------------------------------------------
# Many facts


@dataclass
class MultilingualRun:
    """`run_multilingual`'s tables: the sets, the per-prompt suppression effects, per-fact counts."""

    sets: pd.DataFrame  # fact, relation, subject, set ("by_language", "shared", "specific"), definition, language, neuron
    effects: pd.DataFrame  # cross_lingual_effects rows, plus fact
    facts: pd.DataFrame  # per fact: languages, neurons per language, shared (both definitions), skipped and why
    settings: dict = field(default_factory=dict)
    found: dict[int, MultilingualNeurons] = field(default_factory=dict, repr=False)  # fact -> its result

    def matrix(self, control: str = "kn") -> pd.DataFrame:
        return effect_matrix(self.effects, control) if len(self.effects) else pd.DataFrame()


def usable_prompts(kn: KnowledgeModel, fact) -> tuple[dict[str, list[str]], str]:
    """The prompts a model can score per language (a decoder needs the blank at the end); "" or why not."""
    from kneuron.errors import PromptError

    prompts = {lang: [q for q in ps if kn.is_masked or kn.ends_at_blank(q)] for lang, ps in fact.prompts.items()}
    empty = [lang for lang, ps in prompts.items() if not ps]
    if empty:
        return prompts, f"no prompt ending at the blank in {', '.join(empty)}"
    for lang, answer in fact.answers.items():
        try:
            kn.answer_ids(answer)
        except PromptError as exc:
            return prompts, f"{lang}: {exc}"
    return prompts, ""


def fact_interactions(kn: KnowledgeModel, run: MultilingualRun, top: int = 20, seed: int | None = None,
                      progress=None, **options) -> list[tuple[str, object]]:
    """`neuron_interactions` of every analysed fact in every language, on the language's top `top`
    neurons by the run's own attributions (no attribution is recomputed).  The null of (fact i,
    language) is seeded with `derived_seed(seed, "interactions", i, language)` (default seed: the
    run's), recorded in each result's settings and null.  `progress(done, total, label, result)`
    after each (fact, language)."""
    from kneuron.experiments.interactions import neuron_interactions, top_of_results
    from kneuron.seeds import derived_seed

    seed = run.settings.get("seed", 0) if seed is None else seed
    out = []
    total = sum(len(found.results) for found in run.found.values())
    for i, found in run.found.items():
        subject = run.facts.loc[run.facts["fact"] == i, "subject"].iloc[0]
        for lang, results in found.results.items():
            neurons = top_of_results(results, top)
            res = neuron_interactions(kn, found.prompts[lang], found.answers[lang], neurons, top=top,
                                      null_seed=derived_seed(seed, "interactions", int(i), lang), **options)
            out.append((f"{subject} [{lang}]", res))
            if progress is not None:
                progress(len(out), total, out[-1][0], res)
    return out


def run_multilingual(kn: KnowledgeModel, facts, *, shared: str = "pooled", seed: int = 0, progress=None,
                     **options) -> MultilingualRun:
    """`find_multilingual_neurons` and `cross_lingual_effects` over many facts (`MultilingualFact`s);
    `progress(i, fact, row)` after each.

    Both definitions of `shared` come from the same attributions; the one not chosen is also
    suppressed (row "shared:<definition>") so the two can be compared.  Fact i's random neurons
    are drawn with seed + i; its neuron sets are also measured on the next analysed fact of another
    subject (control "kn@other").
    """
    other = next(m for m in SHARED_METHODS if m != shared)
    set_rows, effect_frames, fact_rows, kept = [], [], [], {}
    usable = [usable_prompts(kn, fact) for fact in facts]
    ok = [i for i, (_, why) in enumerate(usable) if not why]
    for i, fact in enumerate(facts):
        prompts, why = usable[i]
        row = {"fact": i, "relation": fact.relation, "subject": fact.subject, "languages": ",".join(prompts),
               "skipped": why}
        t0 = time.perf_counter()
        if not why:
            found = kept[i] = find_multilingual_neurons(kn, prompts, fact.answers, shared=shared, **options)
            alt = shared_neurons(found.by_language, found.shares, other, found.settings["p"])
            for lang, ns in found.by_language.items():
                row[f"neurons_{lang}"] = len(ns)
                row[f"specific_{lang}"] = len(found.specific[lang])
                set_rows += [(i, fact.relation, fact.subject, "by_language", "", lang, n) for n in ns]
                set_rows += [(i, fact.relation, fact.subject, "specific", shared, lang, n) for n in found.specific[lang]]
            row[f"shared_{shared}"], row[f"shared_{other}"] = len(found.shared), len(alt)
            set_rows += [(i, fact.relation, fact.subject, "shared", shared, "", n) for n in found.shared]
            set_rows += [(i, fact.relation, fact.subject, "shared", other, "", n) for n in alt]
            j = next((k for k in ok[ok.index(i) + 1:] + ok[:ok.index(i)] if facts[k].subject != fact.subject), None)
            control = None if j is None else ({lang: usable[j][0][lang] for lang in prompts if lang in usable[j][0]},
                                              facts[j].answers)
            effects = cross_lingual_effects(kn, found, seed=seed + i, extra={f"shared:{other}": alt},
                                            other_fact=control)
            effects.insert(0, "fact", i)
            effect_frames.append(effects)
            row["seconds"] = round(time.perf_counter() - t0, 2)
        fact_rows.append(row)
        if progress is not None:
            progress(i, fact, row)
    sets = pd.DataFrame(set_rows, columns=["fact", "relation", "subject", "set", "definition", "language", "neuron"])
    sets.insert(len(sets.columns), "layer", [n.layer for n in sets["neuron"]])
    sets.insert(len(sets.columns), "index", [n.index for n in sets["neuron"]])
    sets["neuron"] = sets["neuron"].map(str)
    effects = pd.concat(effect_frames, ignore_index=True) if effect_frames else pd.DataFrame()
    settings = {"shared": shared, "seed": seed, **options}
    return MultilingualRun(sets, effects, pd.DataFrame(fact_rows), settings, kept)


__all__ = [
    "MultilingualRun",
    "fact_interactions",
    "run_multilingual",
    "usable_prompts",
    "SHARED_METHODS",
    "MultilingualNeurons",
    "cross_lingual_effects",
    "effect_matrix",
    "find_multilingual_neurons",
    "language_shares",
    "shared_neurons",
    "suppression_sets",
]

"""One fact, start to finish: attribute its paraphrases, refine, and test the neurons at once.

The dataset-scale pipeline answers "what holds PARAREL?"; this answers the first question a
researcher asks of a new model: "which neurons hold *this* fact, and do they matter?".  It runs
the paper's steps on a handful of prompts (coarse sets at 0.2 x max, refinement at a fixed p, the
activation baseline at 0.5 x max) and the suppress / amplify test of section 5.2 against a seeded
random control of the same size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from kneuron.attribution.result import AttributionResult
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron
from kneuron.selection import BASELINE_THRESHOLD, KN_THRESHOLD, baseline_neurons, coarse_neurons, refine
from kneuron.selection.config import DEFAULT as SELECTION
from kneuron.selection.controls import random_like

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

METHOD_ORDER = ("kn", "baseline", "random")


@dataclass
class FactProbe:
    """What `probe_fact` found.  `effects` has one row per (method, prompt)."""

    answer: str
    prompts: list[str]
    results: list[AttributionResult]
    neurons: dict[str, list[Neuron]]  # method -> neurons ("kn", "baseline", "random")
    effects: pd.DataFrame
    settings: dict = field(default_factory=dict)

    def shared_by(self) -> dict[Neuron, int]:
        """For each knowledge neuron, how many prompts' coarse sets hold it."""
        counts = Counter(n for r in self.results for n in r.coarse(self.settings["threshold"]))
        return {n: counts[n] for n in self.neurons["kn"]}

    def summary(self) -> pd.DataFrame:
        """Per method: neurons, and the relative change of the mean gold probability (paper's ratio of means)."""
        rows = []
        for method in METHOD_ORDER:
            sub = self.effects[self.effects["method"] == method]
            before = sub["p"].mean()
            rows.append({"method": method, "neurons": len(self.neurons[method]),
                         "suppress_change": (sub["p_suppressed"].mean() - before) / before if before else float("nan"),
                         "amplify_change": (sub["p_amplified"].mean() - before) / before if before else float("nan")})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"answer": self.answer, "prompts": self.prompts, "settings": self.settings,
                "neurons": {m: [[n.layer, n.index] for n in ns] for m, ns in self.neurons.items()},
                "shared_by": {str(n): c for n, c in self.shared_by().items()},
                "summary": self.summary().to_dict(orient="records"),
                "effects": self.effects.to_dict(orient="records")}


def probe_fact(kn: KnowledgeModel, prompts: Sequence[str], answer: str, *, threshold: float = KN_THRESHOLD,
               p: float = SELECTION.p_start, min_prompts: int = SELECTION.min_prompts, baseline_threshold: float = BASELINE_THRESHOLD, steps: int = 20,
               rule: str = "riemann_left", seed: int = 0, factor: float = 2.0) -> FactProbe:
    """Find one fact's knowledge neurons from its paraphrases and measure suppress / amplify effects."""
    from kneuron.interventions.activations import scaled_probabilities

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise KneuronError("probe_fact needs at least one prompt")
    if len(prompts) < min_prompts:
        raise KneuronError(f"{len(prompts)} prompt(s) given, but a refined neuron must be shared by at least "
                           f"{min_prompts} prompts; give more paraphrases or lower min_prompts (--min-prompts)")
    results = kn.attribute(prompts, answer, steps=steps, rule=rule)
    neurons = {"kn": refine([coarse_neurons(r.scores, threshold) for r in results], p, min_prompts),
               "baseline": refine([baseline_neurons(r.activations, baseline_threshold) for r in results], p,
                                  min_prompts)}
    neurons["random"] = random_like([neurons["kn"]], kn.num_layers, kn.num_neurons, seed=seed)[0]
    answers = [answer] * len(prompts)
    base = kn.probabilities(prompts, answers)
    rows = []
    for name in METHOD_ORDER:
        sets = [neurons[name]] * len(prompts)
        down = scaled_probabilities(kn, prompts, answers, sets, 0.0)
        up = scaled_probabilities(kn, prompts, answers, sets, factor)
        for i, prompt in enumerate(prompts):
            rows.append({"method": name, "prompt": prompt, "p": float(base[i]), "p_suppressed": float(down[i]),
                         "p_amplified": float(up[i])})
    settings = {"model": kn.name, "threshold": threshold, "p": p, "min_prompts": min_prompts,
                "baseline_threshold": baseline_threshold, "steps": steps, "rule": rule, "seed": seed,
                "factor": factor}
    return FactProbe(answer, prompts, results, neurons, pd.DataFrame(rows), settings)

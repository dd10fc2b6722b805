"""One prompt's attribution as a value: ranked, thresholded, saved, loaded and drawn.

Results outlive the model that made them (inseq's lesson): a saved result reloads without the
model, with the settings that produced it, so a figure or a neuron list can be redone later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kneuron.errors import KneuronError
from kneuron.neurons import Neuron
from kneuron.tagged_files import load_tagged, save_tagged

FORMAT = "kneuron-attribution"
FORMAT_VERSION = 1


@dataclass
class AttributionResult:
    """Attribution of one prompt.  `scores` and `activations` are (num_layers, num_neurons).

    With an answer spanning several masks (masked LMs), `scores` sums each neuron's attribution
    over the mask positions and `activations` is their mean.  Layers left out of the call
    (`layers=`) score 0.

    `method` is the localization method that scored (`kneuron.localization`: "ig" for integrated
    gradients); `steps` and `rule` are IG's integration points and rule (`kneuron.attribution.paths`),
    0 and "" for a method that does not integrate.  A file saved before `rule` existed loads as
    method "ig" with its integration rule, which it recorded under "method".
    """

    prompt: str
    answer: str
    scores: torch.Tensor
    activations: torch.Tensor
    probability: float  # the target (gold probability) on the clean prompt
    convergence_delta: torch.Tensor | None  # per layer: sum(scores[l]) - (P(w) - P(0 at layer l))
    method: str = "ig"
    steps: int = 20
    target: str = "product"
    model: str = ""
    rule: str = "riemann_left"

    def top(self, k: int = 10) -> list[tuple[Neuron, float, float]]:
        """The k highest-scoring neurons as (neuron, score, activation), best first."""
        if k < 1:
            raise KneuronError(f"top k must be >= 1, got {k}")
        flat = self.scores.reshape(-1)
        k = min(k, flat.numel())
        values, order = torch.topk(flat, k)
        width = self.scores.shape[1]
        return [(Neuron(int(i) // width, int(i) % width), float(v), float(self.activations.reshape(-1)[i]))
                for v, i in zip(values.tolist(), order.tolist())]

    def coarse(self, threshold: float = 0.2) -> list[Neuron]:
        """The prompt's coarse set: neurons scoring >= threshold x the maximum (spec section 2)."""
        from kneuron.selection import coarse_neurons

        return coarse_neurons(self.scores, threshold)

    def max_abs_delta(self) -> float | None:
        """Largest |convergence delta| over layers; None without a zero point (riemann_right, or a method
        other than IG)."""
        if self.convergence_delta is None:
            return None
        return float(self.convergence_delta.abs().max())

    # -- files --------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """One safetensors file: scores, activations, deltas, plus the prompt and settings as metadata."""
        tensors = {"scores": self.scores.float(), "activations": self.activations.float()}
        if self.convergence_delta is not None:
            tensors["convergence_delta"] = self.convergence_delta.float()
        meta = {"prompt": self.prompt, "answer": self.answer, "probability": self.probability,
                "method": self.method, "steps": self.steps, "target": self.target, "model": self.model,
                "rule": self.rule}
        return save_tagged(path, tensors, "kneuron_attribution", FORMAT, FORMAT_VERSION, meta)

    @classmethod
    def load(cls, path) -> AttributionResult:
        meta, tensors = load_tagged(path, "kneuron_attribution", FORMAT, (FORMAT_VERSION,), "attribution")
        method, rule = (meta["method"], meta["rule"]) if "rule" in meta else ("ig", meta["method"])  # older files
        return cls(meta["prompt"], meta["answer"], tensors["scores"], tensors["activations"],
                   float(meta["probability"]), tensors.get("convergence_delta"), method, int(meta["steps"]),
                   meta["target"], meta.get("model", ""), rule)

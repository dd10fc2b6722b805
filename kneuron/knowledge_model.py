"""`KnowledgeModel`: a loaded language model plus everything kneuron does with it.

    kn = kneuron.load("bert-base-cased")
    res = kn.attribute("The capital of Ireland is [MASK].", "Dublin")
    neurons = kn.find_neurons(prompts, "Dublin")
    with kn.suppress(neurons):
        kn.probability(prompt, "Dublin")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kneuron.data.facts import MASK
from kneuron.errors import KneuronError, PromptError
from kneuron.models.tokens import answer_token_ids, fill_mask_token
from kneuron.neurons import Neuron, as_neurons


@dataclass(frozen=True)
class EncodedPrompt:
    text: str
    ids: tuple[int, ...]
    blank: int  # position whose neurons are attributed and whose prediction is scored


class KnowledgeModel:
    def __init__(self, model, tokenizer, adapter, name: str = ""):
        self.model, self.tokenizer, self.adapter, self.name = model, tokenizer, adapter, name
        self.num_layers = len(adapter.blocks(model))
        self.num_neurons = adapter.num_neurons(model)
        self._encode_cache: dict[str, EncodedPrompt] = {}
        self._answer_cache: dict[str, int] = {}

    def __repr__(self) -> str:
        return (f"KnowledgeModel({self.name or type(self.model).__name__}, family={self.adapter.family}, "
                f"layers={self.num_layers}, neurons={self.num_neurons}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_masked(self) -> bool:
        return self.adapter.objective == "masked"

    # -- prompts and answers ------------------------------------------------------------------
    def encode(self, prompt: str) -> EncodedPrompt:
        """Token ids and blank position; a masked LM needs exactly one blank in the prompt."""
        hit = self._encode_cache.get(prompt)
        if hit is not None:
            return hit
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"empty prompt: {prompt!r}")
        if self.is_masked:
            mask_token = self.tokenizer.mask_token
            n = prompt.count(MASK) + (prompt.count(mask_token) if mask_token != MASK else 0)
            if n != 1:
                what = "no blank" if n == 0 else f"{n} blanks"
                raise PromptError(f"prompt has {what} ({MASK} expected exactly once): {prompt!r}")
            ids = self.tokenizer(fill_mask_token(prompt, self.tokenizer))["input_ids"]
            blank = ids.index(self.tokenizer.mask_token_id)
        else:
            text = prompt
            if MASK in prompt:
                head, _, tail = prompt.partition(MASK)
                if tail.strip(" .") or MASK in tail:
                    raise PromptError(f"causal LM prompt must end at the blank: {prompt!r}")
                text = head.rstrip()
            ids = self.tokenizer(text)["input_ids"]
            blank = len(ids) - 1
        enc = EncodedPrompt(prompt, tuple(ids), blank)
        self._encode_cache[prompt] = enc
        return enc

    def answer_id(self, answer: str) -> int:
        """The single vocabulary id of `answer`; a multi-token answer is an error here."""
        hit = self._answer_cache.get(answer)
        if hit is not None:
            return hit
        if not isinstance(answer, str) or not answer.strip():
            raise PromptError(f"empty answer: {answer!r}")
        ids = answer_token_ids(self.tokenizer, answer)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if len(ids) != 1 or ids[0] == unk:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise PromptError(f"answer {answer!r} is not a single token for this tokenizer: {pieces}")
        self._answer_cache[answer] = ids[0]
        return ids[0]

    def blank_positions(self, input_ids: torch.Tensor, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the blanks in a batch: mask tokens (masked LM) or last real token (causal)."""
        if self.is_masked:
            rows, cols = torch.nonzero(input_ids == self.tokenizer.mask_token_id, as_tuple=True)
            return rows, cols
        if attention_mask is None:
            cols = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            cols = (attention_mask.bool() * positions).max(dim=1).values
        return torch.arange(input_ids.shape[0], device=input_ids.device), cols

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        if layers is None:
            return list(range(self.num_layers))
        out = sorted({int(x) for x in layers})
        bad = [x for x in out if not 0 <= x < self.num_layers]
        if bad or not out:
            raise KneuronError(f"layers must be within 0..{self.num_layers - 1}, got {list(layers)!r}")
        return out

    def default_internal_batch_size(self, steps: int) -> int:
        """Path-point rows per forward/backward: one prompt's whole staircase on CPU."""
        rows = steps * self.num_layers
        if self.device.type == "cuda":
            rows *= 8
        return rows

    # -- predictions ----------------------------------------------------------------------------
    @torch.no_grad()
    def blank_logits(self, prompts: Sequence[str]) -> torch.Tensor:
        """(len(prompts), V) logits at each prompt's blank; equal-length prompts share a batch."""
        encoded = [self.encode(p) for p in prompts]
        out = torch.empty(len(prompts), 0)
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(encoded):
            groups.setdefault(len(e.ids), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), 64):
                chunk = idx[start:start + 64]
                ids = torch.tensor([encoded[i].ids for i in chunk], device=self.device)
                logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                blank = torch.tensor([encoded[i].blank for i in chunk], device=self.device)
                rows = logits[torch.arange(len(chunk), device=self.device), blank].float()
                if out.numel() == 0:
                    out = torch.empty(len(prompts), rows.shape[-1], device=self.device)
                out[chunk] = rows
        return out

    def probabilities(self, prompts: Sequence[str], answers: str | Sequence[str]) -> torch.Tensor:
        """Gold-token probability at the blank of each prompt (softmax over the vocabulary)."""
        if isinstance(answers, str):
            answers = [answers] * len(prompts)
        gold = torch.tensor([self.answer_id(a) for a in answers], device=self.device)
        probs = torch.softmax(self.blank_logits(prompts), dim=-1)
        return probs[torch.arange(len(prompts), device=self.device), gold]

    def probability(self, prompt: str, answer: str) -> float:
        return float(self.probabilities([prompt], [answer])[0])

    def predict(self, prompt: str, k: int = 5) -> list[tuple[str, float]]:
        probs = torch.softmax(self.blank_logits([prompt])[0], dim=-1)
        top = torch.topk(probs, k)
        tokens = self.tokenizer.convert_ids_to_tokens(top.indices.tolist())
        return list(zip(tokens, top.values.tolist()))

    @torch.no_grad()
    def activations(self, prompt: str) -> torch.Tensor:
        """(num_layers, num_neurons) neuron activations at the blank."""
        from kneuron.models.replay import trace_forward

        enc = self.encode(prompt)
        ids = torch.tensor([enc.ids], device=self.device)
        trace = trace_forward(self.model, self.adapter, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                              torch.tensor([enc.blank], device=self.device))
        return trace.activations[0].float()

    # -- attribution and selection ----------------------------------------------------------------
    def attribute(self, prompt, answer, steps: int = 20, method: str = "riemann_left", layers=None,
                  internal_batch_size: int | None = None, precision: str = "fp32"):
        """Integrated-gradients attribution; one result for a prompt, a list for a list of prompts."""
        from kneuron.attribution import IntegratedGradients

        ig = IntegratedGradients(self, steps=steps, method=method, layers=layers,
                                 internal_batch_size=internal_batch_size, precision=precision)
        results = ig.attribute(prompt, answer)
        return results[0] if isinstance(prompt, str) else results

    def find_neurons(self, prompts: Sequence[str], answer: str, threshold: float = 0.2, p: float = 0.7,
                     min_prompts: int = 3, steps: int = 20, method: str = "riemann_left") -> list[Neuron]:
        """Refined knowledge neurons of one fact (spec sections 2-3, fixed p)."""
        from kneuron.selection import coarse_neurons, refine

        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise KneuronError("find_neurons needs at least one prompt")
        results = self.attribute(list(prompts), answer, steps=steps, method=method)
        return refine([coarse_neurons(r.scores, threshold) for r in results], p, min_prompts)

    # -- interventions ------------------------------------------------------------------------------
    def suppress(self, neurons):
        """Context manager: the neurons' activations at the blank are set to 0."""
        from kneuron.interventions import scale_activations

        return scale_activations(self, neurons, 0.0)

    def amplify(self, neurons, factor: float = 2.0):
        """Context manager: the neurons' activations at the blank are multiplied by `factor`."""
        from kneuron.interventions import scale_activations

        return scale_activations(self, neurons, factor)

    def neurons(self, items) -> list[Neuron]:
        return as_neurons(items, self.num_layers, self.num_neurons)


def load(name_or_path: str = "world", device="auto", dtype=None) -> KnowledgeModel:
    """Load a model from a hub name or local directory; "world" is the built-in fact-world model."""
    from kneuron.models.loading import load_hf

    source = str(name_or_path)
    if source == "world":
        from kneuron.world import ensure_world

        source = str(ensure_world())
    model, tokenizer, adapter = load_hf(source, device=device, dtype=dtype)
    return KnowledgeModel(model, tokenizer, adapter, name=str(name_or_path))

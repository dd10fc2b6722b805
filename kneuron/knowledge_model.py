"""`KnowledgeModel`: a loaded language model plus everything kneuron does with it.

    kn = kneuron.load("bert-base-cased")
    res = kn.attribute("The capital of Ireland is [MASK].", "Dublin")
    neurons = kn.find_neurons(prompts, "Dublin")
    with kn.suppress(neurons):
        kn.probability(prompt, "Dublin")
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kneuron.data.facts import MASK, ends_at_blank
from kneuron.errors import KneuronError, PromptError
from kneuron.models.replay import takes_logits_to_keep
from kneuron.models.tokens import (
    answer_context_mismatch,
    answer_token_ids,
    fill_mask_token,
    prompt_token_ids,
    show_tokens,
    token_texts,
)
from kneuron.neurons import Neuron, as_neurons
from kneuron.selection.config import DEFAULT as SELECTION
from kneuron.selection.specific import SPECIFIC_FRACTION


@dataclass(frozen=True)
class Encoded:
    """A prompt (and answer) as the model sees it.

    - `ids`: model input.  Masked LM: the prompt with one mask token per answer token.  Causal LM:
      the text before the blank followed by the answer's tokens except the last (teacher forcing).
    - `blank`: positions whose neurons are read and scaled: the mask positions (masked LM), or
      the last prompt position, where the answer begins (causal LM).
    - `targets` / `target_ids`: the positions scored and the gold token expected at each.
    """

    text: str
    answer: str | None
    ids: tuple[int, ...]
    blank: tuple[int, ...]
    targets: tuple[int, ...] = ()
    target_ids: tuple[int, ...] = ()


class _Positions:
    """Logits of a sequence's last positions, indexed by absolute position (an int or a list)."""

    def __init__(self, logits: torch.Tensor, offset: int):
        self.logits, self.offset = logits, offset

    def __getitem__(self, position):
        if isinstance(position, list):
            return self.logits[[p - self.offset for p in position]]
        return self.logits[position - self.offset]


class KnowledgeModel:
    def __init__(self, model, tokenizer, adapter, name: str = "", multi_token: bool | None = None):
        self.model, self.tokenizer, self.adapter, self.name = model, tokenizer, adapter, name
        self.num_layers = len(adapter.blocks(model))
        self.num_neurons = adapter.num_neurons(model)
        # Masked LMs follow the paper (one-token answers) unless asked; causal LMs teacher-force.
        self.multi_token = (adapter.objective == "causal") if multi_token is None else bool(multi_token)
        self._encode_cache: dict[tuple, Encoded] = {}
        self._answer_cache: dict[str, tuple[int, ...]] = {}
        # (prompt text, answer) pairs already checked in context, and the (answer, spelling in context)
        # mismatches already warned about
        self._context_checked: set[tuple[str, str]] = set()
        self._context_warned: set[tuple[str, tuple[int, ...]]] = set()
        self._blanks = None  # (rows, cols) of the batch being run by this object, for interventions
        # a causal LM's scoring passes compute the head only at the positions they read (`_run`)
        self._keeps_logits = not self.is_masked and takes_logits_to_keep(model)

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
    def answer_ids(self, answer: str) -> tuple[int, ...]:
        """Token ids of `answer` as a continuation word; one token unless `multi_token` is on."""
        hit = self._answer_cache.get(answer)
        if hit is not None:
            return hit
        if not isinstance(answer, str) or not answer.strip():
            raise PromptError(f"empty answer: {answer!r}")
        ids = tuple(answer_token_ids(self.tokenizer, answer))
        unk = getattr(self.tokenizer, "unk_token_id", None)
        pieces = show_tokens(self.tokenizer, ids)
        if not ids or (unk is not None and unk in ids and unk not in (self.tokenizer.eos_token_id,)):
            raise PromptError(f"answer {answer!r} has tokens unknown to this tokenizer: {pieces}")
        if len(ids) != 1 and not self.multi_token:
            raise PromptError(f"answer {answer!r} is not a single token for this tokenizer: {pieces} "
                              "(load with multi_token=True to score several tokens)")
        self._answer_cache[answer] = ids
        return ids

    def answer_id(self, answer: str) -> int:
        """The single vocabulary id of `answer` (an error if it has several tokens)."""
        ids = self.answer_ids(answer)
        if len(ids) != 1:
            raise PromptError(f"answer {answer!r} is not a single token: {show_tokens(self.tokenizer, ids)}")
        return ids[0]

    def _check_blank(self, prompt: str) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"empty prompt: {prompt!r}")
        mask_token = self.tokenizer.mask_token if self.is_masked else None
        n = prompt.count(MASK) + (prompt.count(mask_token) if mask_token and mask_token != MASK else 0)
        if self.is_masked and n != 1:
            what = "no blank" if n == 0 else f"{n} blanks"
            raise PromptError(f"prompt has {what} ({MASK} expected exactly once): {prompt!r}")
        if not self.is_masked and n > 1:
            raise PromptError(f"prompt has {n} blanks ({MASK} expected at most once, at the end): {prompt!r}")

    def ends_at_blank(self, prompt: str) -> bool:
        """Whether a causal LM can answer this prompt: nothing but punctuation after the blank."""
        return ends_at_blank(prompt)

    def encode(self, prompt: str, answer: str | None = None) -> Encoded:
        """Token ids, blank and scored positions; errors name the prompt or answer at fault."""
        key = (prompt, answer)
        hit = self._encode_cache.get(key)
        if hit is not None:
            return hit
        self._check_blank(prompt)
        gold = self.answer_ids(answer) if answer is not None else ()
        if self.is_masked:
            ids = list(self.tokenizer(fill_mask_token(prompt, self.tokenizer))["input_ids"])
            b = ids.index(self.tokenizer.mask_token_id)
            k = max(len(gold), 1)
            ids[b:b + 1] = [self.tokenizer.mask_token_id] * k
            blank = tuple(range(b, b + k))
            enc = Encoded(prompt, answer, tuple(ids), blank, blank if gold else (), gold)
        else:
            if not self.ends_at_blank(prompt):
                raise PromptError(f"causal LM prompt must end at the blank: {prompt!r}")
            text = prompt.partition(MASK)[0].rstrip() if MASK in prompt else prompt
            ids = prompt_token_ids(self.tokenizer, text)
            if not ids:
                raise PromptError(f"prompt has no tokens before the blank: {prompt!r}")
            if gold:
                self._check_answer_in_context(text, answer, gold)
            b = len(ids) - 1
            ids += list(gold[:-1])
            enc = Encoded(prompt, answer, tuple(ids), (b,), tuple(range(b, b + len(gold))), gold)
        self._encode_cache[key] = enc
        return enc

    def _check_answer_in_context(self, text: str, answer: str, gold: tuple[int, ...]) -> None:
        """Warn when the answer's tokens after the prompt differ from the answer's tokens alone, which
        kneuron scores: the model would not write it the way it is scored.  Every prompt is checked
        (a mismatch can depend on the prompt's last characters); each distinct in-context spelling of
        an answer is warned about once, at the first prompt that shows it."""
        if (text, answer) in self._context_checked:
            return
        self._context_checked.add((text, answer))
        seen = answer_context_mismatch(self.tokenizer, text, answer, gold)
        if seen is not None and (answer, tuple(seen)) not in self._context_warned:
            self._context_warned.add((answer, tuple(seen)))
            import warnings

            warnings.warn(f"answer {answer!r} is tokenized {show_tokens(self.tokenizer, gold)} alone (as kneuron "
                          f"scores it) but {show_tokens(self.tokenizer, seen)} after the prompt {text!r}; "
                          "its probability is that of a spelling the model would not write here",
                          UserWarning, stacklevel=3)

    def blank_positions(self, input_ids: torch.Tensor, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the blanks in a batch.

        Inside this object's own forward passes the encoded blanks are used; for a direct call of
        `kn.model(...)`: the mask tokens (masked LM) or the last real token (causal LM).
        """
        if self._blanks is not None:
            return self._blanks
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
        """Path-point rows per forward/backward, sized for prompts of up to 64 tokens.

        GPU (CUDA, MPS): as many rows as fit in 70% of the free memory
        (`kneuron.runs.memory.choose_internal_batch_size`).  CPU: one prompt's whole staircase
        (steps x layers), fewer only when that would not fit in the available RAM.
        """
        from kneuron.runs import memory

        rows = steps * self.num_layers
        if self.device.type in ("cuda", "mps"):
            return memory.choose_internal_batch_size(self, seq_len=64, steps=steps)
        if rows * memory.rough_row_bytes(self, 64) < memory.available_ram() // 4:
            return rows  # fits easily: no need to measure
        return memory.choose_internal_batch_size(self, seq_len=64, steps=steps, max_rows=rows)

    # -- predictions ----------------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, encoded: Sequence[Encoded], fn, batch: int = 64, before_chunk=None) -> list:
        """Forward equal-length examples together (no padding); `fn(example, logits)` per example.

        `before_chunk(indices)` is told which examples the next forward pass holds.
        """
        out: list = [None] * len(encoded)
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(encoded):
            groups.setdefault(len(e.ids), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), batch):
                chunk = idx[start:start + batch]
                ids = torch.tensor([encoded[i].ids for i in chunk], device=self.device)
                rows = torch.tensor([r for r, i in enumerate(chunk) for _ in encoded[i].blank], device=self.device)
                cols = torch.tensor([c for i in chunk for c in encoded[i].blank], device=self.device)
                self._blanks = (rows, cols)
                if before_chunk is not None:
                    before_chunk(chunk)
                extra, offset = {}, 0
                if self._keeps_logits:  # a causal LM: the head only at the positions read (a 262k vocabulary
                    # at every position of a 256-row batch would be gigabytes of logits)
                    offset = min(p for i in chunk for p in (*encoded[i].blank, *encoded[i].targets))
                    extra = {"logits_to_keep": ids.shape[1] - offset}
                try:
                    logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits
                finally:
                    self._blanks = None
                for r, i in enumerate(chunk):
                    out[i] = fn(encoded[i], _Positions(logits[r], offset) if offset else logits[r])
        return out

    def probabilities(self, prompts: Sequence[str], answers: str | Sequence[str], target: str = "product",
                      _before_chunk=None, batch: int = 64) -> torch.Tensor:
        """Gold-answer probability at each prompt's blank (softmax over the vocabulary).

        Multi-token answers: the product of their tokens' probabilities (`target` picks another
        score, see `kneuron.attribution.targets`).  `batch`: rows per forward pass.
        """
        from kneuron.attribution.targets import check_target, target_values

        check_target(target)
        if isinstance(answers, str):
            answers = [answers] * len(prompts)
        encoded = [self.encode(p, a) for p, a in zip(prompts, answers)]

        def score(e, logits):
            gold = torch.tensor(e.target_ids, device=self.device)
            return target_values(logits[list(e.targets)][None], gold, target)[0]

        values = self._run(encoded, score, batch=batch, before_chunk=_before_chunk)
        return torch.stack(values) if values else torch.empty(0, device=self.device)

    def answer_log_probs(self, prompts: Sequence[str], answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(answer) per answer token, answer is the top-1) per prompt; float64 log-probabilities.

        One token: log p(gold) at the blank and "top-1 is gold", as in the paper's perplexity and
        accuracy.  Several tokens (teacher forcing, or one mask per token): the mean of their
        log-probabilities, and correct only when every token is the top-1 at its position.
        """
        encoded = [self.encode(p, a) for p, a in zip(prompts, answers)]

        def score(e, logits):
            rows = logits[list(e.targets)].double()
            gold = torch.tensor(e.target_ids, device=self.device)
            logp = torch.log_softmax(rows, dim=-1).gather(1, gold[:, None]).mean()
            return logp, bool((rows.argmax(dim=-1) == gold).all())

        out = self._run(encoded, score)
        if not out:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
        return torch.stack([lp for lp, _ in out]).cpu(), torch.tensor([c for _, c in out])

    def probability(self, prompt: str, answer: str, target: str = "product") -> float:
        return float(self.probabilities([prompt], [answer], target)[0])

    def blank_logits(self, prompts: Sequence[str]) -> torch.Tensor:
        """(len(prompts), V) logits at each prompt's (first) blank."""
        encoded = [self.encode(p) for p in prompts]
        return torch.stack(self._run(encoded, lambda e, logits: logits[e.blank[0]].float()))

    def predict(self, prompt: str, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely tokens at the blank, as text (" Tokyo", not the piece "ĠTokyo")."""
        probs = torch.softmax(self.blank_logits([prompt])[0], dim=-1)
        top = torch.topk(probs, k)
        return list(zip(token_texts(self.tokenizer, top.indices.tolist()), top.values.tolist()))

    @torch.no_grad()
    def generate(self, prompt: str, tokens: int = 50) -> list[int]:
        """The greedy continuation (token ids) of a prompt ending at the blank: what the model says,
        beside what teacher-forced probabilities score.  Causal LMs only."""
        if self.is_masked:
            raise KneuronError(f"{self.name or 'this model'} is a masked LM: it scores blanks but does not generate")
        ids = torch.tensor([self.encode(prompt).ids], device=self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(tokens),
                                  do_sample=False, pad_token_id=pad)
        return out[0, ids.shape[1]:].tolist()

    @torch.no_grad()
    def activations(self, prompt: str, answer: str | None = None) -> torch.Tensor:
        """(num_layers, num_neurons) neuron activations at the blank (mean over several masks)."""
        from kneuron.models.replay import read_activations

        enc = self.encode(prompt, answer)
        acts, _ = read_activations(self.model, self.adapter, torch.tensor([enc.ids], device=self.device))
        return acts[0][:, list(enc.blank)].float().mean(1)

    # -- attribution and selection ----------------------------------------------------------------
    def attribute(self, prompt, answer, method: str = "ig", steps: int = 20, rule: str = "riemann_left",
                  layers=None, internal_batch_size: int | None = None, precision: str = "fp32",
                  target: str = "product", *, subject: str = "", seed: int = 0):
        """Every neuron's score for the answer; one `AttributionResult` for a prompt, a list for a list.

        `method`: a registered localization method (`kneuron.localization.method_names()`), integrated
        gradients by default.  "ig" and "ig_1step" run the exact engine and give its whole result
        (convergence deltas included); `steps`, `rule` (the integration rule, see
        `kneuron.attribution.paths`), `internal_batch_size`, `precision` and `target` are that
        engine's and apply to "ig" alone ("ig_1step" is one step).  Any other method's result holds
        its scores, the activations and P(answer) at the blank, no deltas, and steps 0, rule "";
        `subject` and `seed` are passed to it (atp corrupts the subject).  `layers`: the layers to
        score, the others score 0.
        """
        from kneuron.attribution import INTEGRATION_RULES, AttributionResult, IntegratedGradients
        from kneuron.localization import IG, get_method

        if isinstance(method, str) and method in INTEGRATION_RULES:
            raise KneuronError(f"method={method!r} is an integration rule: pass rule={method!r} "
                               "(method= names a localization method, e.g. 'ig')")
        loc = get_method(method)
        if loc.name != "ig":
            defaults = inspect.signature(KnowledgeModel.attribute).parameters  # one copy of the defaults
            passed = {"steps": steps, "rule": rule, "internal_batch_size": internal_batch_size,
                      "precision": precision, "target": target}
            given = [f"{name}={value!r}" for name, value in passed.items() if value != defaults[name].default]
            if given:
                raise KneuronError(f"{', '.join(given)}: options of method 'ig' only, not of {loc.name!r}")
        if isinstance(loc, IG):
            ig = IntegratedGradients(self, steps=steps if loc.name == "ig" else loc.steps, rule=rule, layers=layers,
                                     internal_batch_size=internal_batch_size, precision=precision, target=target)
            results = ig.attribute(prompt, answer)
            for r in results:
                r.method = loc.name
            return results[0] if isinstance(prompt, str) else results
        kept = self.check_layers(layers)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        answers = [answer] * len(prompts) if isinstance(answer, str) else list(answer)
        if len(answers) != len(prompts):
            raise KneuronError(f"{len(prompts)} prompts but {len(answers)} answers")
        results = []
        for p, a in zip(prompts, answers):
            scores = loc.attribute(self, p, a, subject=subject, seed=seed)
            if len(kept) < self.num_layers:
                scores = scores.clone()
                scores[[n for n in range(self.num_layers) if n not in kept]] = 0
            results.append(AttributionResult(p, a, scores, self.activations(p, a).float().cpu(),
                                             self.probability(p, a), None, loc.name, 0, "product", self.name, ""))
        return results[0] if isinstance(prompt, str) else results

    def find_neurons(self, prompts: Sequence[str], answer: str, threshold: float = SELECTION.threshold,
                     p: float = SELECTION.p_start, min_prompts: int = SELECTION.min_prompts, steps: int = 20,
                     rule: str = "riemann_left",
                     specific_against: Sequence[tuple[Sequence[str], str]] | None = None,
                     specific_rule: str = "effect", specific_fraction: float = SPECIFIC_FRACTION) -> list[Neuron]:
        """Refined knowledge neurons of one fact (spec sections 2-3, fixed p; the defaults are
        `SelectionConfig`'s: p is its p_start, as no relation is there to adapt it over).

        `specific_against`: facts of other relations, as (prompts, answer) pairs.  When given (a
        named deviation from the paper, see `kneuron.selection.specific`), generic neurons are
        dropped.  `specific_rule="effect"`: those whose suppression alone does not lower this
        fact's prompts, or moves the other facts' prompts by more than `specific_fraction` of that;
        `"other_relations"`: those also in one of the other facts' refined sets (same settings).
        """
        from kneuron.selection import check_specific_rule, coarse_neurons, refine, specific_sets

        def refined(prompts, answer):
            if isinstance(prompts, str):
                prompts = [prompts]
            if not prompts:
                raise KneuronError("find_neurons needs at least one prompt")
            results = self.attribute(list(prompts), answer, steps=steps, rule=rule)
            return refine([coarse_neurons(r.scores, threshold) for r in results], p, min_prompts)

        if specific_against is not None:
            check_specific_rule(specific_rule, specific_fraction)
        own = refined(prompts, answer)
        if specific_against is None:
            return own
        if specific_rule == "effect":
            from kneuron.interventions import SpecificityTask, effect_specific_sets

            mine = [prompts] if isinstance(prompts, str) else list(prompts)
            other = [(p, a) for ps, a in specific_against for p in ([ps] if isinstance(ps, str) else ps)]
            return effect_specific_sets(self, [SpecificityTask(own, [(p, answer) for p in mine], other)],
                                        specific_fraction)[0]
        others = [refined(ps, a) for ps, a in specific_against]
        return specific_sets(["own"] + ["other"] * len(others), [own, *others])[0]

    def probe_fact(self, prompts: Sequence[str], answer: str, **options):
        """Refined neurons of one fact plus their suppress / amplify effects beside the baseline and a
        random control (`kneuron.experiments.fact_probe.probe_fact`; options: threshold, p, min_prompts,
        steps, rule, seed, factor)."""
        from kneuron.experiments.fact_probe import probe_fact

        return probe_fact(self, prompts, answer, **options)

    def find_multilingual_neurons(self, prompts_by_language, answers, **options):
        """Per-language refined neurons of one fact, plus its `shared` (language-independent) and
        `specific` ones (`kneuron.experiments.multilingual`; options: shared="pooled"|"intersection",
        threshold, p, min_prompts, steps, rule)."""
        from kneuron.experiments.multilingual import find_multilingual_neurons

        return find_multilingual_neurons(self, prompts_by_language, answers, **options)

    def neuron_interactions(self, prompts: Sequence[str], answer: str, neurons=None, **options):
        """Single and pair suppression effects, interactions, degenerate pairs and a greedy decisive set
        (`kneuron.experiments.interactions`; default neurons: the fact's top 20 by IG)."""
        from kneuron.experiments.interactions import neuron_interactions

        return neuron_interactions(self, prompts, answer, neurons, **options)

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

    # -- weight edits (kneuron.edits) ---------------------------------------------------------------
    def update_fact(self, neurons, original: str, target: str, **options):
        """Rewrite `original` -> `target` in the neurons' value slots (spec 5.4); returns the applied Edit.

        Options as `kneuron.edits.plan_update`: `prompts` (the fact's, for the neurons' signs),
        `direction` ("signed" | "paper"), `embedding` ("output" | "input"), `lambda1`, `lambda2`, `scaling`.
        """
        from kneuron.edits import update_fact

        return update_fact(self, neurons, original, target, **options)

    def erase_relation(self, fact_neurons, *, top_k: int | None = 20, replacement: str = "zero"):
        """Zero the value slots of the top_k most frequent neurons of a relation's facts (spec 5.5); returns the Edit."""
        from kneuron.edits import erase_relation

        return erase_relation(self, fact_neurons, top_k=top_k, replacement=replacement)


def load(name_or_path: str = "world", device="auto", dtype=None, multi_token: bool | None = None) -> KnowledgeModel:
    """Load a model from a hub name, a local directory, a `.gguf` file or a catalogue name
    ("smollm2-135m"; `kneuron models list`); "world" is the built-in fact-world BERT ("world-causal"
    its Llama-shaped decoder).

    `dtype`: float32 (default, the paper's setting), float16 or bfloat16; GGUF weights are
    dequantized to float32 and then cast.  `multi_token`: score answers of several tokens (default:
    masked LMs no, as in the paper; causal LMs yes).
    """
    from kneuron.models.loading import load_hf
    from kneuron.models.sources import resolve_model

    source = resolve_model(str(name_or_path))
    model, tokenizer, adapter = load_hf(source, device=device, dtype=dtype)
    return KnowledgeModel(model, tokenizer, adapter, name=str(name_or_path), multi_token=multi_token)

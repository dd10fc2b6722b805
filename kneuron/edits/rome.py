"""ROME: rank-one model editing (Meng et al., NeurIPS 2022), as a reference editor beside kneuron's own.

"Locating and Editing Factual Associations in GPT" treats the FFN output projection W of one
layer L as a linear associative memory: keys k are its *inputs* (kneuron's knowledge-neuron
coefficients, d_ff-dim), values W k + b its *outputs* (hidden-dim).  To make the subject recall a
new object, ROME picks the subject's key k*, finds a value v* that makes the model say the new
object, and inserts the pair with the smallest change in the metric of the keys' second moment C:

    W' = W + (v* - W k* - b) (C^-1 k*)^T / (k*^T C^-1 k*)         (W in (hidden, d_ff) orientation)

so that W' k* + b = v* exactly, while any key x with (C^-1 k*)^T x = 0 (x orthogonal to k* in the
C^-1 metric) is mapped as before.  It edits the very matrix kneuron's value-slot edits act on
(`Adapter.value_slots`), so the result is an ordinary `Edit` (kind "rome") whose neurons are *all*
the neurons of layer L and whose values are the new value slots: apply / undo (bit for bit) /
save / load / inverse work unchanged.  The update is computed in float64, then cast to the
weight's dtype.

    edit = plan_rome(kn, "Ireland", ["The capital of Ireland is"], "Paris")   # not applied
    edit.apply(kn); ...; edit.undo()
    rome_edit(kn, ...)                                                         # applied
    upd = compute_rome(kn, ...)   # k*, v*, C^-1 k* direction and the optimisation record

The three parts, with ROME's original settings (hparams/ROME/gpt2-xl.json, rome/compute_u.py,
compute_v.py, layer_stats.py) and every deviation:

Key k* (ROME `compute_u`): the down projection's input at the subject's *last* token, averaged
over the edit prompt(s) preceded by a few prefixes.  ROME samples 20 texts from the model itself
(`context_template_length_params` [[5, 10], [10, 10]]: 10 of 5 tokens, 10 of 10) plus the bare
prompt.  *Deviation:* kneuron uses a fixed list of short neutral texts, `DEFAULT_PREFIXES` (the
bare prompt first), joined to the prompt with one space; nothing is sampled, so the key is
deterministic.  Several edit prompts (paraphrases) are allowed; k* averages over every
(prefix, prompt) pair.  The subject token is found from the tokenizer's character offsets (ROME
tokenizes the text up to the subject); the prompt must contain the subject literally (its first
occurrence is used).  Masked LMs read the key in the prompt as the model sees it, with the blank
masked.

Second moment C (ROME `layer_stats`): E[k k^T] over the down projection's inputs at every token
position of local text.  ROME: 100,000 Wikipedia articles (each up to 1,024 tokens), float32.
*Deviation:* the BINGREL sentences under the data dir ($KNEURON_DATA/bingrel, default
../shared/data/bingrel), shuffled with `seed` and capped at `cov_tokens` tokens (default 20,000),
each text truncated to 128 tokens; or the caller's `texts` (in their order).  Accumulated in
float64, stored in float32 (ROME's `mom2_dtype`) under the kneuron cache dir (`rome/`), keyed by a
sha256 of the weights the keys depend on (everything but the blocks after L and L's own down
projection, so earlier ROME edits of the same layer keep the cache) and of the token ids read;
written atomically (`cache=False` skips the cache, a folder replaces its place; the function is
`key_covariance`).  ROME inverts C as it is; kneuron solves with
A = mom2_weight * C + ridge * mean(diag C) * I (ridge default 1e-4) so that a C of low rank (few
texts, dead neurons) stays invertible.  ROME's hparams have no `mom2_update_weight` (that is
MEMIT's lambda in lambda*C + K K^T); for the exact rank-one update above the scale of C cancels,
so `mom2_weight` (default 1.0) only sets the strength of C relative to the ridge.

Value v* (ROME `compute_v`): a vector delta is added to the down projection's *output* at the
subject's last token in layer L, in every prompt of the batch (each prefixed edit prompt, and the
KL prompt), and optimised with Adam (lr 0.5) to maximise log p(target_new) at the answer position
(a causal LM: the tokens after the prompt, multi-token targets teacher-forced; a masked LM: the
[MASK] position(s)), averaged over the answer's tokens and then over the prompts, plus

- kl_factor (0.0625) * KL(p_now || p_start) of the next-token distribution of "{subject} is a"
  (masked LMs: "{subject} is a [MASK].").  *Deviation:* ROME reads that distribution at the
  subject's last token of "{subject} is a"; kneuron reads it where the answer would be, after
  "a" (the [MASK] for masked LMs).
- weight_decay (0.5) * ||delta|| / ||h||^2, ROME's own expression (not squared in delta).  It is
  not scale-free: with GPT-2 XL's large MLP outputs it is a light touch, but in a tiny model whose
  ||h|| is below 1 it outweighs the answer's loss and pins delta at 0 (lower `weight_decay` there).
- after each step delta is projected into the ball of radius clamp_norm (4) * ||h||.

`steps` (20, ROME's v_num_grad_steps) is the number of forward passes; as in ROME the last pass
only measures, so at most steps - 1 Adam updates run.  Early stop: when the mean over prompts of
p(target_new) (per prompt exp of the mean token log-probability) reaches `stop_prob` (0.99);
*deviation:* ROME stops when its total loss falls below 0.05.  h is the original output at the
mean key, W k* + b (the mean of the outputs over the prefixed prompts: the projection is linear);
*deviation:* ROME takes the output at the bare prompt for the decay and clamp, and the residual
against the bare prompt's key; kneuron uses the mean key for both, so v* = W k* + b + delta and
the update maps k* to v* exactly.  The loss is read at the model's own output (ROME's
v_loss_layer = the last layer).  Everything runs in eval mode with the parameters' requires_grad
off, both restored afterwards; nothing is random, and the optimisation runs under
`torch.manual_seed(seed)` in a forked RNG all the same.

Layer: ROME edits GPT-2 XL's MLP 17 of 48 (GPT-J: 5 of 28), found by causal tracing.  kneuron has
no causal tracer in ROME's sense (restoring corrupted hidden states), so the default is the
heuristic `default_layer`: round(0.35 * num_layers), capped at the last layer (17 for 48 layers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from kneuron.data.facts import MASK
from kneuron.edits.value_slots import Edit, ModelShape, slots_fingerprint
from kneuron.errors import DataError, KneuronError
from kneuron.models.replay import as_3d
from kneuron.models.tokens import fill_mask_token, leading_special_ids, token_texts
from kneuron.neurons import Neuron
from kneuron.paths import cache_dir

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

DEFAULT_PREFIXES = ("", "The following is true.", "In summary,", "As a matter of fact,",
                    "According to the record,", "It is well known that")
LAYER_FRACTION = 0.35  # GPT-2 XL: layer 17 of 48
DEFAULT_COV_TOKENS = 20_000
COV_MAX_LEN = 128  # tokens per covariance text
COV_FORMAT = "kneuron-rome-cov-1"


def default_layer(kn: KnowledgeModel) -> int:
    """ROME's early-middle layer as a fraction of depth: round(0.35 * num_layers), at most the last."""
    return max(0, min(kn.num_layers - 1, round(LAYER_FRACTION * kn.num_layers)))


# -- small helpers -----------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised from a hook to end a forward pass once layer L's keys are read."""


def _check_layer(kn: KnowledgeModel, layer) -> int:
    if layer is None:
        return default_layer(kn)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < kn.num_layers:
        raise KneuronError(f"layer must be an int within 0..{kn.num_layers - 1}, got {layer!r}")
    return layer


def _weight_hd(kn: KnowledgeModel, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Layer `layer`'s down projection as float64 (hidden, d_ff) on the CPU, and its bias (or None)."""
    module = kn.adapter.down_projection(kn.model, layer)
    w = kn.adapter.value_slots(kn.model, layer).detach().to("cpu", torch.float64)
    if kn.adapter.slot_axis == 0:
        w = w.T
    bias = getattr(module, "bias", None)
    b = bias.detach().to("cpu", torch.float64) if isinstance(bias, torch.Tensor) else None
    return w, b


def _pad_id(tokenizer) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def _batch(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


@contextmanager
def _frozen(model):
    """Eval mode and no parameter gradients inside; every flag exactly as before afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _max_positions(kn: KnowledgeModel) -> int:
    cfg = getattr(kn.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


# -- where the subject's last token is --------------------------------------------------------------
def _char_token(tokenizer, text: str, char: int, add_special_tokens: bool) -> tuple[int, list[int]]:
    """(index of the token holding character `char` of `text`, the ids of `text`)."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens,
                    return_offsets_mapping=bool(getattr(tokenizer, "is_fast", False)))
    ids = list(enc["input_ids"])
    offsets = enc.get("offset_mapping") if hasattr(enc, "get") else None
    if offsets:
        hits = [i for i, (a, b) in enumerate(offsets) if a <= char < b]
        if hits:
            return hits[-1], ids
    # slow tokenizer (or no offset covers the character): tokenize up to the character (ROME's way)
    lead = len(leading_special_ids(tokenizer)) if add_special_tokens else 0
    part = tokenizer(text[:char + 1], add_special_tokens=False)["input_ids"]
    return lead + len(part) - 1, ids


def _subject_span(subject: str, prompt: str) -> int:
    start = prompt.find(subject)
    if start < 0:
        raise KneuronError(f"subject {subject!r} is not in the prompt {prompt!r}")
    return start


def _subject_last_token(kn: KnowledgeModel, text: str, start: int, subject: str, encoded) -> int:
    """Position in `encoded.ids` of the last token of `subject`, which starts at character `start` of `text`."""
    tok = kn.tokenizer
    last_char = start + len(subject.rstrip()) - 1
    if kn.is_masked:
        filled = fill_mask_token(text, tok)
        shift = len(filled) - len(text) if text.find(MASK) < start and MASK in text else 0
        index, ids = _char_token(tok, filled, last_char + shift, True)
        b, k = encoded.blank[0], len(encoded.blank)
        single = list(encoded.ids[:b + 1]) + list(encoded.ids[b + k:])
        if ids != single:
            raise KneuronError(f"cannot locate the subject {subject!r} in the tokens of {text!r}")
        if index == b:
            raise KneuronError(f"the subject {subject!r} overlaps the blank in {text!r}")
        return index + (k - 1 if index > b else 0)
    before = text.partition(MASK)[0].rstrip() if MASK in text else text
    if last_char >= len(before):
        raise KneuronError(f"subject {subject!r} must come before the blank in the causal prompt {text!r}")
    lead = leading_special_ids(tok)
    index, ids = _char_token(tok, before, last_char, False)
    if lead + ids != list(encoded.ids[:len(lead) + len(ids)]):
        raise KneuronError(f"cannot locate the subject {subject!r} in the tokens of {text!r}")
    return len(lead) + index


def _join(prefix: str, prompt: str) -> tuple[str, int]:
    """prefix + " " + prompt, and where the prompt starts in it."""
    prefix = prefix.strip()
    return (f"{prefix} {prompt}", len(prefix) + 1) if prefix else (prompt, 0)


@dataclass
class _Row:
    text: str
    ids: tuple[int, ...]
    subject_pos: int
    targets: tuple[int, ...]
    target_ids: tuple[int, ...]


def _rows(kn: KnowledgeModel, subject: str, prompts: Sequence[str], target_new: str, prefixes: Sequence[str]) -> tuple[list, _Row]:
    """The rewriting rows (every prefix x every prompt) and the KL row, checked before any computing."""
    rows = []
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise KneuronError(f"empty prompt: {prompt!r}")
        at = _subject_span(subject, prompt)
        for prefix in prefixes:
            text, offset = _join(prefix, prompt)
            enc = kn.encode(text, target_new)
            pos = _subject_last_token(kn, text, offset + at, subject, enc)
            rows.append(_Row(text, enc.ids, pos, enc.targets, enc.target_ids))
    kl_text = f"{subject} is a {MASK}." if kn.is_masked else f"{subject} is a"
    enc = kn.encode(kl_text)
    kl = _Row(kl_text, enc.ids, _subject_last_token(kn, kl_text, 0, subject, enc), (enc.blank[0],), ())
    return rows, kl


# -- the keys' second moment ------------------------------------------------------------------------
def _bingrel_texts(seed: int) -> list[str]:
    from kneuron.data.bingrel import load_bingrel

    try:
        data = load_bingrel()
    except DataError as exc:
        raise DataError(f"ROME's key statistics need text: {exc} (or pass texts=[...])") from None
    seen: dict[str, None] = {}
    for bags in data.values():
        for bag in bags:
            for s in (*bag.th, *bag.h):
                if s.strip():
                    seen.setdefault(s.strip(), None)
    texts = list(seen)
    random.Random(seed).shuffle(texts)
    return texts


def _token_rows(kn: KnowledgeModel, texts: Sequence[str], cov_tokens: int, max_len: int) -> list[list[int]]:
    """Token ids of the texts as the model reads them, until `cov_tokens` tokens (the last one cut)."""
    tok = kn.tokenizer
    lead = leading_special_ids(tok)
    max_len = max(1, min(max_len, _max_positions(kn)))
    out, total = [], 0
    for text in texts:
        if total >= cov_tokens:
            break
        if not isinstance(text, str) or not text.strip():
            continue
        if kn.is_masked:
            ids = list(tok(text, truncation=True, max_length=max_len)["input_ids"])
        else:
            ids = (lead + list(tok(text, add_special_tokens=False)["input_ids"]))[:max_len]
        ids = ids[:cov_tokens - total]
        if ids:
            out.append(ids)
            total += len(ids)
    return out


def _upstream_fingerprint(kn: KnowledgeModel, layer: int) -> str:
    """sha256 of every parameter and buffer the keys of `layer` can depend on.

    Left out: the blocks after `layer` and `layer`'s own down projection (the matrix ROME edits).
    Also hashed: the family and the dtype of each tensor.
    """
    blocks = kn.adapter.blocks(kn.model)
    skip = {id(t) for blk in list(blocks)[layer + 1:] for t in (*blk.parameters(), *blk.buffers())}
    down = kn.adapter.down_projection(kn.model, layer)
    skip |= {id(t) for t in (*down.parameters(), *down.buffers())}
    h = hashlib.sha256(kn.adapter.family.encode())
    seen = set()
    named = list(kn.model.named_parameters(remove_duplicate=True)) + list(kn.model.named_buffers())
    for name, t in named:
        if id(t) in skip or id(t) in seen:
            continue
        seen.add(id(t))
        data = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        if data.numel():
            h.update(memoryview(data.view(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _cov_dir(cache) -> Path | None:
    if cache is False or cache is None:
        return None
    return cache_dir() / "rome" if cache is True else Path(cache).expanduser()


def _write_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def key_covariance(kn: KnowledgeModel, layer: int, texts: Sequence[str] | None = None, *, cov_tokens: int = DEFAULT_COV_TOKENS,
                   max_len: int = COV_MAX_LEN, seed: int = 0, cache=True, batch: int = 16) -> tuple[torch.Tensor, dict]:
    """(C, info): C = E[k k^T] (float64, d_ff x d_ff) of layer `layer`'s down-projection inputs over
    every token position of `texts` (default: the BINGREL sentences, shuffled with `seed`), at most
    `cov_tokens` tokens.  `cache`: True (kneuron's cache dir), a folder, or False.  info: count (tokens
    read), key (the cache key), source, cached (read from the cache), path.
    """
    layer = _check_layer(kn, layer)
    cov_tokens = int(cov_tokens)
    if cov_tokens < 1:
        raise KneuronError(f"cov_tokens must be >= 1, got {cov_tokens}")
    source = "bingrel" if texts is None else "texts"
    if texts is None:
        texts = _bingrel_texts(seed)
    elif isinstance(texts, str):
        texts = [texts]
    rows = _token_rows(kn, list(texts), cov_tokens, max_len)
    if not rows:
        raise KneuronError("ROME's key statistics need at least one non-empty text")
    h = hashlib.sha256(COV_FORMAT.encode())
    h.update(json.dumps({"layer": layer, "family": kn.adapter.family, "neurons": kn.num_neurons}).encode())
    h.update(_upstream_fingerprint(kn, layer).encode())
    for r in rows:
        h.update(torch.tensor(r, dtype=torch.int64).numpy().tobytes() + b"|")
    key = h.hexdigest()
    info = {"source": source, "key": key, "count": sum(len(r) for r in rows), "texts": len(rows),
            "max_len": int(max_len), "cached": False, "path": None}
    folder = _cov_dir(cache)
    path = folder / f"cov-{kn.adapter.family}-layer{layer}-{key[:32]}.pt" if folder is not None else None
    if path is not None:
        info["path"] = str(path)
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                mom2 = data["mom2"]
                if data.get("key") == key and tuple(mom2.shape) == (kn.num_neurons, kn.num_neurons):
                    info.update(cached=True, count=int(data["count"]))
                    return mom2.to(torch.float64), info
            except Exception:  # unreadable or foreign: computed again and rewritten
                pass
    acc = kn.device if kn.device.type == "cuda" else torch.device("cpu")  # float64 products (not on MPS)
    total = torch.zeros(kn.num_neurons, kn.num_neurons, dtype=torch.float64, device=acc)
    site = kn.adapter.down_projection(kn.model, layer)
    seen: dict = {}

    def grab(module, args):
        seen["keys"] = as_3d(args[0], seen["batch"])
        raise _Stop

    pad = _pad_id(kn.tokenizer)
    handle = site.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch):
                ids, mask = _batch(rows[start:start + batch], pad, kn.device)
                seen["batch"] = ids.shape[0]
                try:
                    kn.model(input_ids=ids, attention_mask=mask)
                except _Stop:
                    pass
                keys = seen.pop("keys")[mask.bool()].to(acc, torch.float64)
                total += keys.T @ keys
    finally:
        handle.remove()
    mom2 = (total / info["count"]).to("cpu", torch.float32)  # stored as ROME's mom2_dtype; float64 from here on
    if path is not None:
        _write_atomic(path, {"mom2": mom2, "count": info["count"], "key": key, "format": COV_FORMAT})
    return mom2.to(torch.float64), info


# -- the update -----------------------------------------------------------------------------------
@dataclass
class RomeUpdate:
    """One ROME update of layer `layer`, as vectors (float64, CPU).

    `key` k* (d_ff), `value` v* = W k* + b + delta (hidden), `delta`, `direction`
    C^-1 k* / (k*^T C^-1 k*) (d_ff; direction . k* = 1), `info` (settings and the optimisation
    record, JSON).  `to_edit(kn)` turns it into the `Edit` of the current weights.
    """

    layer: int
    key: torch.Tensor
    value: torch.Tensor
    delta: torch.Tensor
    direction: torch.Tensor
    info: dict = field(default_factory=dict)
    context_keys: torch.Tensor | None = None  # each prefixed prompt's key (rows x d_ff); k* is their mean

    def residual(self, kn: KnowledgeModel) -> torch.Tensor:
        """v* - (W k* + b) against `kn`'s current weights (hidden, float64): what the update must add at k*."""
        w, b = _weight_hd(kn, self.layer)
        return self.value - (w @ self.key + (b if b is not None else 0.0))

    def weight_update(self, kn: KnowledgeModel) -> torch.Tensor:
        """Delta W (hidden, d_ff), float64, against `kn`'s current weights: (v* - W k* - b) direction^T."""
        return torch.outer(self.residual(kn), self.direction)

    def to_edit(self, kn: KnowledgeModel) -> Edit:
        """The new value slots of every neuron of the layer (kind "rome"), not applied."""
        w, _ = _weight_hd(kn, self.layer)
        residual = self.residual(kn)
        weight = kn.adapter.value_slots(kn.model, self.layer)
        new_slots = (w + torch.outer(residual, self.direction)).T.to(weight.dtype).contiguous()
        base = weight.detach().to("cpu")
        base = (base if kn.adapter.slot_axis == 0 else base.T).contiguous().clone()
        neurons = [Neuron(self.layer, j) for j in range(kn.num_neurons)]
        info = dict(self.info, residual_norm=float(residual.norm()))
        return Edit("rome", neurons, new_slots, ModelShape.of(kn), slots_fingerprint(list(base)), info, base)


def _forward(kn: KnowledgeModel, ids, mask, rows_idx, cols_idx, layer, read, delta=None, capture=None,
             full_logits: bool = False):
    """Logits at the positions `read` = (rows, columns) of one padded batch, (len(rows), vocab), with
    `delta` added to layer `layer`'s down-projection output at (rows_idx, cols_idx);
    `capture["keys"]` gets the projection's inputs there.

    Only the positions read go through the output head (a hook gathers them on its way in): with a
    large vocabulary the head costs more than the blocks (Gemma 3: 262k x 640 against about 100M
    block parameters).  `full_logits` runs the head on every position and indexes afterwards: the
    obviously correct reference, tested against the gathered path.
    """
    site = kn.adapter.down_projection(kn.model, layer)
    batch = ids.shape[0]

    def hook(module, args, output):
        if capture is not None:
            capture["keys"] = as_3d(args[0], batch)[rows_idx, cols_idx].detach()
        if delta is None:
            return None
        out = as_3d(output, batch)
        out = out.index_put((rows_idx, cols_idx), out[rows_idx, cols_idx] + delta.to(out.dtype))
        return out.reshape(output.shape)

    def gather(module, args):
        return (args[0][read[0], read[1]].unsqueeze(0), *args[1:])

    head = None if full_logits else kn.model.get_output_embeddings()
    handles = [site.register_forward_hook(hook)]
    if head is not None:
        handles.append(head.register_forward_pre_hook(gather))
    try:
        logits = kn.model(input_ids=ids, attention_mask=mask).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits[0] if head is not None else logits[read[0], read[1]]


def compute_rome(kn: KnowledgeModel, subject: str, prompts: str | Sequence[str], target_new: str, *, layer: int | None = None,
                 texts: Sequence[str] | None = None, steps: int = 20, lr: float = 0.5, kl_factor: float = 0.0625,
                 weight_decay: float = 0.5, clamp_norm: float = 4.0, prefixes: Sequence[str] | None = None,
                 cov_tokens: int = DEFAULT_COV_TOKENS, mom2_weight: float = 1.0, ridge: float = 1e-4,
                 stop_prob: float = 0.99, seed: int = 0, cache=True, full_logits: bool = False) -> RomeUpdate:
    """k*, v* and the C^-1 k* direction of the ROME update making `subject` lead to `target_new`.

    Reads the model only: its weights, modes and requires_grad flags are as before afterwards, also
    when it fails.  See the module docstring for every setting.  `full_logits` computes the output
    head on every position (the reference for the default, which reads only the answer positions).
    """
    if not isinstance(subject, str) or not subject.strip():
        raise KneuronError(f"empty subject: {subject!r}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise KneuronError("ROME needs at least one prompt")
    layer = _check_layer(kn, layer)
    prefixes = list(DEFAULT_PREFIXES if prefixes is None else prefixes)
    if not prefixes:
        raise KneuronError("prefixes must hold at least one text ('' for the bare prompt)")
    if int(steps) < 1 or lr <= 0 or kl_factor < 0 or weight_decay < 0 or clamp_norm <= 0 or mom2_weight <= 0 \
            or ridge < 0:
        raise KneuronError("ROME needs steps >= 1, lr > 0, kl_factor >= 0, weight_decay >= 0, clamp_norm > 0, "
                           "mom2_weight > 0 and ridge >= 0")
    target_ids = kn.answer_ids(target_new)  # unknown / empty / multi-token-for-a-masked-LM: PromptError
    rows, kl = _rows(kn, subject, prompts, target_new, prefixes)
    cov, cov_info = key_covariance(kn, layer, texts, cov_tokens=cov_tokens, seed=seed, cache=cache)

    all_rows = [*rows, kl]
    ids, mask = _batch([r.ids for r in all_rows], _pad_id(kn.tokenizer), kn.device)
    rows_idx = torch.arange(len(all_rows), device=kn.device)
    cols_idx = torch.tensor([r.subject_pos for r in all_rows], device=kn.device)
    # the positions whose logits are read: each row's answer positions, then the KL row's one
    read = (torch.tensor([i for i, r in enumerate(all_rows) for _ in r.targets], device=kn.device),
            torch.tensor([t for r in all_rows for t in r.targets], device=kn.device))
    starts = [sum(len(r.targets) for r in all_rows[:i]) for i in range(len(all_rows))]
    w, b = _weight_hd(kn, layer)
    history = []
    with _frozen(kn.model), torch.random.fork_rng(devices=[kn.device] if kn.device.type == "cuda" else []):
        torch.manual_seed(seed)
        p_before = [float(p) for p in kn.probabilities(prompts, [target_new] * len(prompts))]
        capture: dict = {}
        with torch.no_grad():
            _forward(kn, ids, mask, rows_idx, cols_idx, layer, read, capture=capture, full_logits=full_logits)
        context_keys = capture["keys"][:len(rows)].to("cpu", torch.float64)
        key = context_keys.mean(0)
        if not bool(torch.isfinite(key).all()) or float(key.norm()) == 0.0:
            raise KneuronError(f"the subject's key at layer {layer} is zero or not finite; ROME cannot edit it")
        h0 = w @ key + (b if b is not None else 0.0)
        h_norm = max(float(h0.norm()), 1e-12)
        delta = torch.zeros(h0.shape[0], device=kn.device, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        kl_start = None
        for it in range(int(steps)):
            opt.zero_grad()
            logits = _forward(kn, ids, mask, rows_idx, cols_idx, layer, read, delta=delta, full_logits=full_logits)
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll_each = torch.stack([-logp[range(starts[i], starts[i] + len(r.targets)), list(r.target_ids)].mean()
                                    for i, r in enumerate(rows)])
            nll = nll_each.mean()
            kl_logp = logp[starts[len(rows)]][None]
            if kl_start is None:
                kl_start = kl_logp.detach().clone()
            kl_loss = kl_factor * F.kl_div(kl_start, kl_logp, log_target=True, reduction="batchmean")
            decay = weight_decay * delta.norm() / h_norm ** 2
            loss = nll + kl_loss + decay
            p_mean = float(torch.exp(-nll_each.detach()).mean())
            history.append({"loss": float(loss.detach()), "nll": float(nll.detach()), "kl": float(kl_loss.detach()), "decay": float(decay.detach()),
                            "p_new": p_mean})
            if p_mean >= stop_prob or it == int(steps) - 1:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                max_norm = clamp_norm * h_norm
                norm = float(delta.norm())
                if norm > max_norm:
                    delta.mul_(max_norm / norm)
        delta64 = delta.detach().to("cpu", torch.float64)

    direction = insertion_direction(cov, key, ridge=ridge, mom2_weight=mom2_weight,
                                    degenerate=f"at layer {layer}: the key statistics are degenerate (more texts, "
                                               "or a larger ridge)")
    info = {
        "method": "ROME (Meng et al., NeurIPS 2022), kneuron.edits.rome",
        "layer": layer, "subject": subject, "prompts": prompts, "target_new": target_new,
        "target_ids": [int(t) for t in target_ids],
        "target_tokens": token_texts(kn.tokenizer, target_ids),
        "prefixes": prefixes, "kl_prompt": kl.text,
        "steps": int(steps), "steps_run": len(history), "lr": float(lr), "kl_factor": float(kl_factor),
        "weight_decay": float(weight_decay), "clamp_norm": float(clamp_norm), "stop_prob": float(stop_prob),
        "mom2_weight": float(mom2_weight), "ridge": float(ridge), "seed": int(seed),
        "cov_tokens": int(cov_tokens), "cov_count": cov_info["count"], "cov_source": cov_info["source"],
        "cov_key": cov_info["key"], "cov_cached": cov_info["cached"],
        "p_before": p_before, "p_new_optimised": history[-1]["p_new"], "history": history,
        "key_norm": float(key.norm()), "h_norm": h_norm, "delta_norm": float(delta64.norm()),
    }
    return RomeUpdate(layer, key, h0 + delta64, delta64, direction, info, context_keys)


def ridged(cov: torch.Tensor, *, ridge: float, mom2_weight: float, scale: float | None = None) -> torch.Tensor:
    """ROME's A = mom2_weight C + ridge scale I, scale = mean(diag C) unless given (a block of C
    takes the whole C's scale, so that a sub-block is ridged as the full matrix is)."""
    scale = float(torch.diagonal(cov).mean()) if scale is None else scale
    return mom2_weight * cov + ridge * (scale if scale > 0 else 1.0) * torch.eye(cov.shape[0], dtype=torch.float64)


def insertion_direction(cov: torch.Tensor, key: torch.Tensor, *, ridge: float, mom2_weight: float,
                        degenerate: str, scale: float | None = None) -> torch.Tensor:
    """A^-1 k / (k^T A^-1 k) with A = mom2_weight C + ridge scale I, scale = mean(diag C) unless
    given: the direction of the smallest change (in the A metric) that adds a given vector at key
    k.  `degenerate` ends the error raised when k^T A^-1 k is not positive."""
    solved = torch.linalg.solve(ridged(cov, ridge=ridge, mom2_weight=mom2_weight, scale=scale), key)
    denom = float(key @ solved)
    if not math.isfinite(denom) or denom <= 0:
        raise KneuronError(f"k*^T C^-1 k* = {denom} {degenerate}")
    return solved / denom


def plan_rome(kn: KnowledgeModel, subject: str, prompts: str | Sequence[str], target_new: str, *, layer: int | None = None,
              texts: Sequence[str] | None = None, steps: int = 20, lr: float = 0.5, kl_factor: float = 0.0625,
              weight_decay: float = 0.5, clamp_norm: float = 4.0, prefixes: Sequence[str] | None = None,
              cov_tokens: int = DEFAULT_COV_TOKENS, mom2_weight: float = 1.0, ridge: float = 1e-4,
              stop_prob: float = 0.99, seed: int = 0, cache=True) -> Edit:
    """The ROME edit (kind "rome", all neurons of the layer) making `subject` lead to `target_new`; not applied."""
    update = compute_rome(kn, subject, prompts, target_new, layer=layer, texts=texts, steps=steps, lr=lr,
                          kl_factor=kl_factor, weight_decay=weight_decay, clamp_norm=clamp_norm, prefixes=prefixes,
                          cov_tokens=cov_tokens, mom2_weight=mom2_weight, ridge=ridge, stop_prob=stop_prob,
                          seed=seed, cache=cache)
    return update.to_edit(kn)


def rome_edit(kn: KnowledgeModel, subject: str, prompts: str | Sequence[str], target_new: str, **options) -> Edit:
    """`plan_rome(...)` applied; returns the applied `Edit` (`.undo()` reverts it bit for bit)."""
    return plan_rome(kn, subject, prompts, target_new, **options).apply(kn)

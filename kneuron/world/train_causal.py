"""A small Llama-shaped decoder that learns the same fact world: knowledge neurons in a gated MLP.

Why it exists: random tiny decoders prove that kneuron computes the right thing on every family;
only a *trained* decoder shows that the neurons it finds carry facts (suppressing them lowers the
gold probability, random neurons do not).  Choices, where they differ from the BERT world:

* Llama's MLP is gated, so its neuron is act(gate) x up (`kneuron.models.adapters`), the case the
  paper never met.  Embeddings are tied, so value-slot edits with E[t] act on the output space.
* A word-level tokenizer over the world's vocabulary, BOS first: every answer is one token.
* A causal LM can only answer a prompt whose blank is at the end, so only those templates train
  and are scored (16 of the 72 templates have their blank earlier; `kneuron discover` skips them).
  The loss of a prompt is read at its last position only; BINGREL sentences add next-token loss.
* Label smoothing, schedule and determinism as for the BERT world (`kneuron.world.train`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from kneuron.data.facts import MASK, ends_at_blank
from kneuron.world.generate import World
from kneuron.world.train import (
    _collate,
    _prompt_rows,
    build_vocab,
    deterministic_threads,
    prompt_metrics,
    save_trained,
    train_steps,
    weighted_loss,
)

BOS, EOS, PAD, UNK = "[CLS]", "[SEP]", "[PAD]", "[UNK]"


@dataclass(frozen=True)
class CausalTrainConfig:
    """Model size and optimisation of the decoder world.  The defaults train in about 2 minutes on one core."""

    kind: ClassVar[str] = "causal"

    architecture: str = "llama"
    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    epochs: int = 25
    batch_size: int = 64
    lr: float = 2e-3
    warmup_fraction: float = 0.06
    decay_fraction: float = 0.3
    weight_decay: float = 0.01
    label_smoothing: float = 0.45
    sentence_fraction: float = 0.2
    sentence_loss_weight: float = 0.5
    seed: int = 0
    num_threads: int | None = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CausalTrainConfig:
        return cls(**d)


def build_causal_tokenizer(world: World, max_length: int = 512):
    """Word-level tokenizer over the world's words, punctuation and characters; BOS prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [w for w in build_vocab(world) if not w.startswith("##")]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab.index(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=PAD, model_max_length=max_length)


def _context_ids(tok, prompt: str) -> list[int]:
    return tok(prompt.partition(MASK)[0].rstrip())["input_ids"]


def make_causal_model(vocab_size: int, cfg: CausalTrainConfig, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.architecture != "llama":
        raise ValueError(f"unknown decoder architecture {cfg.architecture!r} (this trainer builds 'llama')")
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                         intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(config)


def _examples(cfg: CausalTrainConfig, rng: random.Random, prompts, sentences):
    """One epoch: (ids, labels, is_cloze), where labels[t] is the token to predict after position t."""
    out = []
    for ids, gold in prompts:
        labels = [-100] * len(ids)
        labels[-1] = gold
        out.append((ids, labels, True))
    n_sent = round(len(sentences) * cfg.sentence_fraction)
    for i in sorted(rng.sample(range(len(sentences)), n_sent)):
        ids = sentences[i]
        out.append((ids, ids[1:] + [-100], False))
    rng.shuffle(out)
    for start in range(0, len(out), cfg.batch_size):
        yield out[start:start + cfg.batch_size]


def train_causal_world_model(world: World, out_dir: str | Path, config: CausalTrainConfig | None = None,
                             log: Callable[[str], None] | None = print) -> dict:
    """Train the world's decoder, save model + tokenizer at the root of `out_dir`, return metrics."""
    import torch

    cfg = config or CausalTrainConfig()
    log = log or (lambda _msg: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with deterministic_threads(cfg.num_threads):
        t0 = time.perf_counter()
        tok = build_causal_tokenizer(world, cfg.max_position_embeddings)
        prompts = [(_context_ids(tok, p), gold) for _, held_out, p, gold, _ in _prompt_rows(world, tok)
                   if not held_out and ends_at_blank(p)]
        sentences = [tok(s)["input_ids"] for bags in world.bags.values() for b in bags
                     for s in b["th_bags"] + b["h_bags"]]
        torch.manual_seed(cfg.seed)
        model = make_causal_model(len(tok), cfg, tok)
        model.train()
        rng = random.Random(cfg.seed)
        per_epoch = math.ceil((len(prompts) + round(len(sentences) * cfg.sentence_fraction)) / cfg.batch_size)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        log(f"training a {cfg.num_layers}-layer Llama (hidden {cfg.hidden_size}, gated FFN {cfg.intermediate_size}, "
            f"vocab {len(tok)}) on {len(prompts)} prompts ending at the blank and {len(sentences)} sentences, "
            f"{cfg.epochs} epochs x {per_epoch} steps")

        def step_loss(batch):
            ids, att, labels, cloze = _collate(batch, torch)
            hidden = model.model(input_ids=ids, attention_mask=att).last_hidden_state
            sel = labels != -100
            return weighted_loss(model.lm_head(hidden[sel]), labels[sel], cloze[sel], loss_fn,
                                 cfg.sentence_loss_weight)

        step, last_loss = train_steps(model, cfg, lambda: _examples(cfg, rng, prompts, sentences),
                                      step_loss, max(1, per_epoch * cfg.epochs), log, "Llama")
        train_seconds = time.perf_counter() - t0
        model.eval()
        t1 = time.perf_counter()
        metrics = evaluate_causal_world_model(model, tok, world)
        metrics.update(train_seconds=round(train_seconds, 2), eval_seconds=round(time.perf_counter() - t1, 2),
                       steps=step, final_loss=round(last_loss, 5), vocab_size=len(tok),
                       num_parameters=sum(p.numel() for p in model.parameters()))
        save_trained(model, tok, out_dir)
        return metrics


def evaluate_causal_world_model(model, tokenizer, world: World) -> dict:
    """As `evaluate_world_model`, over the prompts a causal LM can answer (blank at the end)."""
    import torch

    every = list(_prompt_rows(world, tokenizer))
    rows = [r for r in every if ends_at_blank(r[2])]
    probs, hits = [], []
    with torch.no_grad():
        for _, _, prompt, gold, _ in rows:  # one at a time: no padding questions, and it takes seconds
            ids = torch.tensor([_context_ids(tokenizer, prompt)])
            logits = model(input_ids=ids).logits[0, -1].float()
            probs.append(float(logits.softmax(-1)[gold]))
            hits.append(int(logits.argmax()) == gold)
    metrics = prompt_metrics(world, rows, probs, hits)
    metrics["prompts_not_ending_at_blank"] = len(every) - len(rows)
    return metrics

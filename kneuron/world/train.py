"""A small BERT that learns the fact world from scratch, on one CPU core, in under two minutes.

Why these choices:

* The tokenizer is a real WordPiece `BertTokenizerFast` whose vocabulary holds every world word
  and name whole, so every answer is one token (as in LAMA), plus single characters and
  "##" characters so that any other word still splits instead of becoming [UNK].
* Two kinds of training text: the cloze prompts of the *training* templates with the object masked
  (what the knowledge-neuron experiments query), and the BINGREL-style sentences with the usual 15%
  random masking (so that the open-domain text the T1/T2/T3 experiment reads is familiar).
* Label smoothing keeps the gold probabilities away from 1 (median ~0.54 instead of ~0.98), so that
  interventions on neurons show up as probability changes instead of vanishing in saturation.
* No dropout and a constant learning rate with a late linear decay: memorising ~600 arbitrary
  facts in ~1,200 steps is the bottleneck, and both made it markedly faster in trials.
* The loss reads logits only at masked positions (the vocabulary projection of every position
  would cost as much as the encoder), and batches are padded to their own longest sequence.
* Determinism: one seeded `random.Random` for data order and masking, `torch.manual_seed` for the
  weights, deterministic algorithms on and a fixed thread count (float sums depend on how work is
  split across threads), so the same seed gives bit-identical weights on a given machine.  One
  thread is also the fast choice on a shared 2-core box, where OpenMP threads stall each other.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from kneuron.data.facts import MASK
from kneuron.world.generate import World

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CHARS = string.digits + string.ascii_lowercase + string.ascii_uppercase


@dataclass(frozen=True)
class TrainConfig:
    """Model size and optimisation.  The defaults train in ~100 s on one CPU core."""

    kind: ClassVar[str] = "masked"

    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512  # room for prompts padded to 128 and sentences to 512
    dropout: float = 0.0  # memorising facts fast matters more here than regularisation
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    warmup_fraction: float = 0.06
    decay_fraction: float = 0.3  # constant LR after warm-up, then linear decay over this last share
    weight_decay: float = 0.01
    label_smoothing: float = 0.45  # target 1 - eps on the gold: p(gold) settles near 0.55, not ~1
    mlm_probability: float = 0.15
    sentence_fraction: float = 0.2  # share of the BINGREL sentences read per epoch (fresh draw each)
    sentence_loss_weight: float = 0.5  # the cloze loss has weight 1
    seed: int = 0
    num_threads: int | None = 1  # one thread: same weights whoever calls, and no OpenMP stalls on a busy CPU

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Tokenizer


def _pre_tokenize(text: str) -> list[str]:
    from tokenizers.pre_tokenizers import BertPreTokenizer

    return [w for w, _ in BertPreTokenizer().pre_tokenize_str(text)]


def build_vocab(world: World) -> list[str]:
    """Specials, punctuation, every world word whole (sorted), then characters and ##characters."""
    words: set[str] = set()
    for text in world.texts():
        words.update(_pre_tokenize(text.replace(MASK, " ")))
    punct = list(string.punctuation)
    chars = list(_CHARS)
    fixed = set(SPECIAL_TOKENS) | set(punct) | set(chars)
    vocab = list(SPECIAL_TOKENS) + punct + sorted(words - fixed) + chars + ["##" + ch for ch in _CHARS]
    return vocab


def build_tokenizer(world: World, max_length: int = 512):
    """A cased WordPiece `BertTokenizerFast` made from the world's own vocabulary."""
    from transformers import BertTokenizerFast

    vocab = build_vocab(world)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False,
                            strip_accents=False)
    tok.model_max_length = max_length
    return tok


def save_vocab_txt(tokenizer, out_dir: Path) -> Path:
    """Also write the classic vocab.txt (id order), for tools that read WordPiece files directly."""
    vocab = tokenizer.get_vocab()
    path = Path(out_dir) / "vocab.txt"
    path.write_text("".join(w + "\n" for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Training data


@dataclass
class _Data:
    cloze_ids: list[list[int]]
    cloze_pos: list[int]
    cloze_gold: list[int]
    sent_ids: list[list[int]]


def _prompt_rows(world: World, tokenizer):
    """(relation, is the held-out template, prompt, gold id, language) for every prompt, relation by relation."""
    for rel in world.relations:
        for f in world.facts:
            if f.relation != rel.id:
                continue
            gold = tokenizer.convert_tokens_to_ids(f.object)
            held_out = rel.templates_in(f.language)[1]
            for i, prompt in enumerate(f.prompts):
                yield rel.id, i == held_out, prompt, gold, f.language


def _training_data(world: World, tok) -> _Data:
    mask_id = tok.mask_token_id
    rows = [(prompt, gold) for _, held_out, prompt, gold, _ in _prompt_rows(world, tok) if not held_out]
    prompts, golds = [p for p, _ in rows], [g for _, g in rows]
    cloze_ids = tok(prompts, add_special_tokens=True)["input_ids"]
    cloze_pos = [ids.index(mask_id) for ids in cloze_ids]
    sentences = [s for bags in world.bags.values() for b in bags for s in b["th_bags"] + b["h_bags"]]
    sent_ids = tok(sentences, add_special_tokens=True)["input_ids"] if sentences else []
    return _Data(cloze_ids, cloze_pos, golds, sent_ids)


def _mask_sentence(ids: list[int], rng: random.Random, p: float, mask_id: int, n_special: int,
                   vocab_size: int) -> tuple[list[int], list[int]]:
    """BERT's 80/10/10 masking of ~p of the inner tokens (at least one)."""
    inner = list(range(1, len(ids) - 1))
    chosen = [i for i in inner if rng.random() < p] or [rng.choice(inner)]
    out, labels = list(ids), [-100] * len(ids)
    for i in chosen:
        labels[i] = ids[i]
        r = rng.random()
        if r < 0.8:
            out[i] = mask_id
        elif r < 0.9:
            out[i] = rng.randrange(n_special, vocab_size)
    return out, labels


def _batches(data: _Data, cfg: TrainConfig, rng: random.Random, mask_id: int, vocab_size: int):
    """One epoch: cloze examples plus a fresh sample of masked sentences, shuffled, in batches."""
    examples = []  # (ids, labels, is_cloze)
    for ids, pos, gold in zip(data.cloze_ids, data.cloze_pos, data.cloze_gold):
        labels = [-100] * len(ids)
        labels[pos] = gold
        examples.append((ids, labels, True))
    n_sent = round(len(data.sent_ids) * cfg.sentence_fraction)
    for i in sorted(rng.sample(range(len(data.sent_ids)), n_sent)):
        ids, labels = _mask_sentence(data.sent_ids[i], rng, cfg.mlm_probability, mask_id,
                                     len(SPECIAL_TOKENS), vocab_size)
        examples.append((ids, labels, False))
    rng.shuffle(examples)
    for start in range(0, len(examples), cfg.batch_size):
        yield examples[start:start + cfg.batch_size]


def _collate(batch, torch):
    """Padded ids, attention mask, labels, and which positions belong to cloze prompts."""
    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    cloze = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (x, y, is_cloze) in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x)
        att[row, : len(x)] = 1
        labels[row, : len(y)] = torch.tensor(y)
        cloze[row] = is_cloze
    return ids, att, labels, cloze


# --------------------------------------------------------------------------------------------
# Training and evaluation


def make_model(vocab_size: int, cfg: TrainConfig):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        hidden_act="gelu",
        type_vocab_size=2,
        pad_token_id=0,
    )
    return BertForMaskedLM(config)


def make_optimizer(model, cfg, total_steps: int):
    """AdamW without decay on norms and biases; linear warm-up, constant, then a late linear decay."""
    import torch

    warmup = max(1, int(total_steps * cfg.warmup_fraction))
    decay = max(1, int(total_steps * cfg.decay_fraction))
    with_wd, without_wd = [], []
    for name, param in model.named_parameters():
        (without_wd if param.ndim < 2 or "LayerNorm" in name else with_wd).append(param)
    opt = torch.optim.AdamW(
        [{"params": with_wd, "weight_decay": cfg.weight_decay}, {"params": without_wd, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 1.0, max(0.0, (total_steps - s) / decay))
    )
    return opt, sched


def save_trained(model, tokenizer, out_dir: Path) -> None:
    """save_pretrained for model and tokenizer, without a progress bar in our log."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out_dir)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out_dir)


@contextlib.contextmanager
def deterministic_threads(num_threads: int | None):
    """Deterministic algorithms and a fixed thread count for the block (float sums depend on both)."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def train_steps(model, cfg, epochs_of_batches, step_loss, total: int, log, name: str) -> tuple[int, float]:
    """The shared loop: `step_loss(batch)` -> loss; clip, step, schedule; logs about 8 times."""
    import torch

    opt, sched = make_optimizer(model, cfg, total)
    t0 = time.perf_counter()
    step, last_loss = 0, float("nan")
    for epoch in range(cfg.epochs):
        run_loss, n = 0.0, 0
        for batch in epochs_of_batches():
            loss = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            run_loss += loss.item()
            n += 1
        last_loss = run_loss / max(1, n)
        if epoch == 0 or (epoch + 1) % max(1, cfg.epochs // 8) == 0 or epoch + 1 == cfg.epochs:
            log(f"  {name} epoch {epoch + 1:3d}/{cfg.epochs}  loss {last_loss:.4f}  ({time.perf_counter() - t0:.0f} s)")
    return step, last_loss


def train_world_model(world: World, out_dir: str | Path, config: TrainConfig | None = None,
                      log: Callable[[str], None] | None = print) -> dict:
    """Train the world's masked LM, save model + tokenizer at the root of `out_dir`, return metrics."""
    import torch

    cfg = config or TrainConfig()
    log = log or (lambda _msg: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with deterministic_threads(cfg.num_threads):
        t0 = time.perf_counter()
        tok = build_tokenizer(world, cfg.max_position_embeddings)
        data = _training_data(world, tok)
        torch.manual_seed(cfg.seed)
        model = make_model(len(tok), cfg)
        model.train()
        rng = random.Random(cfg.seed)
        per_epoch = math.ceil(
            (len(data.cloze_ids) + round(len(data.sent_ids) * cfg.sentence_fraction)) / cfg.batch_size
        )
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        log(
            f"training a {cfg.num_layers}-layer BERT (hidden {cfg.hidden_size}, FFN {cfg.intermediate_size}, "
            f"vocab {len(tok)}) on {len(data.cloze_ids)} cloze prompts and {len(data.sent_ids)} sentences, "
            f"{cfg.epochs} epochs x {per_epoch} steps"
        )

        def step_loss(batch):
            ids, att, labels, cloze = _collate(batch, torch)
            hidden = model.bert(input_ids=ids, attention_mask=att).last_hidden_state
            sel = labels != -100
            return weighted_loss(model.cls(hidden[sel]), labels[sel], cloze[sel], loss_fn, cfg.sentence_loss_weight)

        step, last_loss = train_steps(model, cfg, lambda: _batches(data, cfg, rng, tok.mask_token_id, len(tok)),
                                      step_loss, max(1, per_epoch * cfg.epochs), log, "BERT")
        train_seconds = time.perf_counter() - t0

        model.eval()
        t1 = time.perf_counter()
        metrics = evaluate_world_model(model, tok, world)
        metrics.update(
            train_seconds=round(train_seconds, 2),
            eval_seconds=round(time.perf_counter() - t1, 2),
            steps=step,
            final_loss=round(last_loss, 5),
            vocab_size=len(tok),
            num_parameters=sum(p.numel() for p in model.parameters()),
        )
        save_trained(model, tok, out_dir)
        save_vocab_txt(tok, out_dir)
        return metrics


def weighted_loss(logits, gold, is_cloze, loss_fn, sentence_weight: float):
    """Cloze loss (weight 1) plus the sentences' loss (weight `sentence_weight`)."""
    loss = logits.new_zeros(())
    if is_cloze.any():
        loss = loss + loss_fn(logits[is_cloze], gold[is_cloze])
    if (~is_cloze).any():
        loss = loss + sentence_weight * loss_fn(logits[~is_cloze], gold[~is_cloze])
    return loss


def evaluate_world_model(model, tokenizer, world: World, batch_size: int = 256) -> dict:
    """Accuracy and gold probability per prompt, split into training and held-out templates.

    A prediction counts as correct only if it is the fact's own object (also for N-M relations,
    where each (relation, subject) has exactly one listed object).
    """
    import torch

    rows = list(_prompt_rows(world, tokenizer))  # (relation, held_out, prompt, gold_id, language)
    probs, hits = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            enc = tokenizer([r[2] for r in chunk], return_tensors="pt", padding=True)
            pos = (enc["input_ids"] == tokenizer.mask_token_id).int().argmax(dim=1)
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            at_mask = logits[torch.arange(len(chunk)), pos].float()
            p = at_mask.softmax(-1)
            gold = torch.tensor([r[3] for r in chunk])
            probs.extend(p[torch.arange(len(chunk)), gold].tolist())
            hits.extend((at_mask.argmax(-1) == gold).tolist())
    if was_training:
        model.train()
    return prompt_metrics(world, rows, probs, hits)


def prompt_metrics(world: World, rows, probs: list[float], hits: list[bool]) -> dict:
    """Overall and per-relation accuracy and gold probability, training vs held-out templates."""

    def summary(idx: list[int]) -> dict:
        if not idx:
            return {"prompts": 0, "accuracy": None, "median_gold_prob": None}
        return {
            "prompts": len(idx),
            "accuracy": round(sum(hits[i] for i in idx) / len(idx), 4),
            "median_gold_prob": round(statistics.median(probs[i] for i in idx), 4),
            "mean_gold_prob": round(sum(probs[i] for i in idx) / len(idx), 4),
        }

    train_idx = [i for i, r in enumerate(rows) if not r[1]]
    held_idx = [i for i, r in enumerate(rows) if r[1]]
    per_relation = {}
    chances = []
    for rel in world.relations:
        n_obj = len(world.objects_of(rel.id))
        chance = 1.0 / max(1, n_obj)
        chances.append(chance)
        tr = summary([i for i in train_idx if rows[i][0] == rel.id])
        ho = summary([i for i in held_idx if rows[i][0] == rel.id])
        per_relation[rel.id] = {
            "label": rel.label,
            "type": rel.type,
            "facts": sum(1 for f in world.facts if f.relation == rel.id),
            "objects": n_obj,
            "train_accuracy": tr["accuracy"],
            "train_median_gold_prob": tr["median_gold_prob"],
            "held_out_accuracy": ho["accuracy"],
            "held_out_median_gold_prob": ho["median_gold_prob"],
            "chance": round(chance, 4),
        }
    tr, ho = summary(train_idx), summary(held_idx)
    per_language = {}
    for lang in dict.fromkeys(r[4] for r in rows if r[4]):  # multilingual worlds: each language apart
        ltr = summary([i for i in train_idx if rows[i][4] == lang])
        lho = summary([i for i in held_idx if rows[i][4] == lang])
        per_language[lang] = {"train_accuracy": ltr["accuracy"], "train_median_gold_prob": ltr["median_gold_prob"],
                              "held_out_accuracy": lho["accuracy"],
                              "held_out_median_gold_prob": lho["median_gold_prob"],
                              "train_prompts": ltr["prompts"], "held_out_prompts": lho["prompts"]}
    extra = {"per_language": per_language} if per_language else {}
    return {
        "train_accuracy": tr["accuracy"],
        "median_gold_prob": tr["median_gold_prob"],
        "mean_gold_prob": tr.get("mean_gold_prob"),
        "held_out_accuracy": ho["accuracy"],
        "held_out_median_gold_prob": ho["median_gold_prob"],
        "held_out_chance": round(sum(chances) / max(1, len(chances)), 4),
        "train_prompts": tr["prompts"],
        "held_out_prompts": ho["prompts"],
        "per_relation": per_relation,
        **extra,
    }


__all__ = [
    "SPECIAL_TOKENS",
    "TrainConfig",
    "build_tokenizer",
    "build_vocab",
    "evaluate_world_model",
    "make_model",
    "train_world_model",
]

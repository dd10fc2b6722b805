"""How prompts and answers become token ids, and token ids become text a user can read.

Prompts carry the placeholder "[MASK]".  For a masked LM it becomes the tokenizer's own mask
token (RoBERTa's "<mask>"); the answer must then be one vocabulary entry.  An answer is encoded as
it would appear after a space in running text (" Dublin"), which is what BPE and SentencePiece
vocabularies store for a word-initial token; WordPiece ignores the space.

A decoder's prompt starts with the special tokens its tokenizer puts in front of text (Gemma's
`<bos>`, without which Gemma's predictions are garbage) and never ends with one (an appended
`<eos>` would sit where the answer must begin).  What the tokenizer actually produces decides:
its `add_bos_token` attribute is not reliable (Gemma's says False while its post-processor adds
`<bos>`; SmolLM2's tokenizer adds nothing, and SmolLM2 needs nothing).
"""

from __future__ import annotations

from kneuron.data.facts import MASK

_BOUNDARY_PIECES = ("▁", "Ġ")


def fill_mask_token(prompt: str, tokenizer) -> str:
    """Swap the dataset placeholder for the tokenizer's own mask token."""
    mask = getattr(tokenizer, "mask_token", None)
    if mask is None or mask == MASK:
        return prompt
    return prompt.replace(MASK, mask)


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of `answer` as a continuation word (no special tokens)."""
    text = answer.strip()
    ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    if ids and tokenizer.convert_ids_to_tokens(ids[0]) in _BOUNDARY_PIECES:
        # A lone word-boundary piece before the word: the word itself is what we want.
        ids = ids[1:]
    return list(ids)


def is_single_token(tokenizer, answer: str) -> bool:
    ids = answer_token_ids(tokenizer, answer)
    unk = getattr(tokenizer, "unk_token_id", None)
    return len(ids) == 1 and ids[0] != unk


def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens this tokenizer puts before any text (e.g. [<bos>]; [] for SmolLM2)."""
    probe = "x"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), None)
    return full[:start] if start is not None else []


def prompt_token_ids(tokenizer, text: str) -> list[int]:
    """A decoder's prompt: the tokenizer's leading specials (BOS), then the text; no trailing EOS."""
    return leading_special_ids(tokenizer) + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_texts(tokenizer, ids) -> list[str]:
    """Each token as the text it stands for: " Tokyo", not the vocabulary piece "ĠTokyo" / "▁Tokyo".

    A token that is only part of a character (byte-level pieces of an emoji) keeps its piece.
    """
    ids = [int(i) for i in ids]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    out = []
    for i, piece in zip(ids, pieces):
        text = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(piece if "\ufffd" in text and "\ufffd" not in (piece or "") else text)
    return out


def token_text(tokenizer, token_id: int) -> str:
    return token_texts(tokenizer, [token_id])[0]


def show_tokens(tokenizer, ids) -> str:
    """Tokens for a message: [' Paris', ' Texas'] (quoted, so that leading spaces show)."""
    return "[" + ", ".join(repr(t) for t in token_texts(tokenizer, ids)) + "]"


def answer_context_mismatch(tokenizer, prefix_text: str, answer: str, answer_ids) -> list[int] | None:
    """The ids of `answer` as they come out of `prefix_text + " " + answer`, when they differ from
    `answer_ids` (the answer tokenized alone, as kneuron scores it); None when they agree."""
    prefix = list(tokenizer(prefix_text, add_special_tokens=False)["input_ids"])
    joined = list(tokenizer(prefix_text + " " + answer.strip(), add_special_tokens=False)["input_ids"])
    if joined[:len(prefix)] == prefix and joined[len(prefix):] == list(answer_ids):
        return None
    # Where the prompt's own tokens end in the joint tokenization is not always clear (a merge
    # across the boundary); report everything after the longest common start.
    k = 0
    while k < min(len(prefix), len(joined)) and prefix[k] == joined[k]:
        k += 1
    return joined[k:]

"""How prompts and answers become token ids, for any tokenizer.

Prompts carry the placeholder "[MASK]".  For a masked LM it becomes the tokenizer's own mask
token (RoBERTa's "<mask>"); the answer must then be one vocabulary entry.  An answer is encoded as
it would appear after a space in running text (" Dublin"), which is what BPE and SentencePiece
vocabularies store for a word-initial token; WordPiece ignores the space.
"""

from __future__ import annotations

from kneuron.data.facts import MASK


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
    if ids and tokenizer.convert_ids_to_tokens(ids[0]) in ("▁", "Ġ"):
        # A lone word-boundary piece before the word: the word itself is what we want.
        ids = ids[1:]
    return list(ids)


def is_single_token(tokenizer, answer: str) -> bool:
    ids = answer_token_ids(tokenizer, answer)
    unk = getattr(tokenizer, "unk_token_id", None)
    return len(ids) == 1 and ids[0] != unk

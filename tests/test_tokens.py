"""Decoder tokenization: the tokenizer's BOS is kept, a trailing EOS is not, answers are checked in
context, and tokens are shown as text."""

import warnings

import pytest
import torch

import kneuron
from kneuron.errors import PromptError
from kneuron.models.tokens import leading_special_ids, show_tokens, token_texts


def with_template(kn, single: str):
    """Give the tokenizer a post-processor, as Gemma's (BOS) or BERT-like ones (BOS ... EOS)."""
    from tokenizers.processors import TemplateProcessing

    specials = [("<|endoftext|>", kn.tokenizer.convert_tokens_to_ids("<|endoftext|>")),
                ("<pad>", kn.tokenizer.convert_tokens_to_ids("<pad>"))]
    kn.tokenizer._tokenizer.post_processor = TemplateProcessing(single=single, special_tokens=specials)
    return kn


def manual_probability(kn, ids, answer_id):
    with torch.no_grad():
        logits = kn.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(torch.softmax(logits, -1)[answer_id])


def test_no_special_tokens_when_the_tokenizer_adds_none(llama_dir):
    kn = kneuron.load(str(llama_dir), device="cpu")  # like SmolLM2: nothing added
    assert leading_special_ids(kn.tokenizer) == []
    enc = kn.encode("The capital of Ireland is", "Dublin")
    prompt = kn.tokenizer("The capital of Ireland is", add_special_tokens=False)["input_ids"]
    assert list(enc.ids[:enc.blank[0] + 1]) == prompt


@pytest.mark.parametrize("template", ["<|endoftext|> $A", "<|endoftext|> $A <pad>"])
def test_bos_is_kept_and_eos_dropped(llama_dir, template):
    kn = with_template(kneuron.load(str(llama_dir), device="cpu"), template)
    bos, eos = kn.tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<pad>"])
    text = "The capital of Ireland is"
    assert kn.tokenizer(text)["input_ids"][0] == bos  # the tokenizer's own setting
    enc = kn.encode(text + " [MASK].", "Dublin")
    plain = kn.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert list(enc.ids[:enc.blank[0] + 1]) == [bos] + plain and eos not in enc.ids
    first = kn.answer_ids("Dublin")[0]
    ours = kn.probability(text, "Dublin", target="first")
    assert ours == pytest.approx(manual_probability(kn, [bos] + plain, first), rel=1e-5)
    # ... and BOS matters to this model, so dropping it would be seen.
    assert manual_probability(kn, plain, first) != pytest.approx(ours, rel=1e-3)


def test_answer_split_differently_in_context_warns_once(llama_dir):
    kn = kneuron.load(str(llama_dir), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kn.encode("The capital of Ireland is", "Dublin")  # same tokens alone and in context: silent
    # Digits are not in the tiny vocabulary: " 1984" alone drops its lone "Ġ", in context it stays.
    with pytest.warns(UserWarning, match=r"answer '1984' is tokenized .* alone .* after the prompt") as seen:
        kn.encode("Rome is in", "1984")
        kn.encode("The capital of France is", "1984")
    assert len([w for w in seen if "1984" in str(w.message)]) == 1  # once per answer and spelling


def test_every_prompt_is_checked_in_context(llama_dir, monkeypatch):
    """An answer that reads the same after one prompt can read otherwise after another (the prompt's
    last characters decide): each prompt is checked, not only the answer's first."""
    import kneuron.knowledge_model as km

    kn = kneuron.load(str(llama_dir), device="cpu")
    checked = []
    real = km.answer_context_mismatch

    def mismatch(tokenizer, text, answer, gold):  # what a tokenizer that merges across words would see
        checked.append((text, answer))
        return list(tokenizer(" -" + answer)["input_ids"]) if text.endswith("born in") else real(
            tokenizer, text, answer, gold)

    monkeypatch.setattr(km, "answer_context_mismatch", mismatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kn.encode("The capital of Ireland is [MASK].", "Dublin")  # reads the same: silent
    with pytest.warns(UserWarning, match=r"answer 'Dublin' is tokenized .* after the prompt 'She was born in'"):
        kn.encode("She was born in [MASK].", "Dublin")
    kn.encode("She was born in [MASK].", "Dublin")  # the same prompt again: not checked again
    assert checked == [("The capital of Ireland is", "Dublin"), ("She was born in", "Dublin")]


@pytest.mark.parametrize("tail", [".", " .", ",", "?", "!", ";", ":", '"', "'", ")", "...", "?!", " ,", "\u2026",
                                  "\u00bb", "\u201d", "", " "])
def test_a_blank_followed_by_punctuation_ends_the_prompt(llama_dir, tail):
    kn = kneuron.load(str(llama_dir), device="cpu")
    prompt = "The capital of Ireland is [MASK]" + tail
    assert kn.ends_at_blank(prompt)
    assert kn.encode(prompt, "Dublin").ids == kn.encode("The capital of Ireland is [MASK].", "Dublin").ids


@pytest.mark.parametrize("tail", [" today.", "'s", "s", " 2", "$", " + 1", "-born", " [MASK]"])
def test_a_blank_followed_by_words_or_symbols_does_not(llama_dir, tail):
    kn = kneuron.load(str(llama_dir), device="cpu")
    prompt = "The capital of Ireland is [MASK]" + tail
    assert not kn.ends_at_blank(prompt)
    with pytest.raises(PromptError):
        kn.encode(prompt, "Dublin")


def test_tokens_are_shown_as_text(llama_dir):
    kn = kneuron.load(str(llama_dir), device="cpu")
    dublin = kn.answer_ids("Dublin")
    assert kn.tokenizer.convert_ids_to_tokens(list(dublin)) == ["ĠDu", "blin"]
    assert token_texts(kn.tokenizer, dublin) == [" Du", "blin"]
    assert show_tokens(kn.tokenizer, dublin) == "[' Du', 'blin']"
    top = kn.predict("The capital of Ireland is", k=5)
    assert all("Ġ" not in token for token, _ in top)
    ids = kn.tokenizer.convert_tokens_to_ids(kn.tokenizer.tokenize(top[0][0]))
    assert token_texts(kn.tokenizer, ids) == [top[0][0]]  # the shown text maps back to the token
    kn.multi_token = False
    with pytest.raises(PromptError, match=r"not a single token for this tokenizer: \[' Pa', 'ris', ' ', 'T'"):
        kn.answer_ids("Paris Texas")


def test_cli_predict_shows_the_leading_space(llama_dir, capsys):
    from kneuron.cli import main

    assert main(["--threads", "1", "predict", "The capital of Ireland is", "-m", str(llama_dir), "--device", "cpu",
                 "-k", "50"]) == 0
    out = capsys.readouterr().out
    assert "Ġ" not in out and "' " in out

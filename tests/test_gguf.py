"""GGUF files: loaded like the same model from safetensors, converted once, and bad files refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
import threading

import pytest
import torch

pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install 'kneuron[gguf]')")
pytest.importorskip("accelerate", reason="the gguf extra is not installed (pip install 'kneuron[gguf]')")

from tiny_gguf import make_tiny_gemma3, make_tiny_llama, write_gguf_of_unknown_architecture  # noqa: E402

import kneuron  # noqa: E402
from kneuron.cli import main  # noqa: E402
from kneuron.errors import ModelError  # noqa: E402
from kneuron.files import sha256_file  # noqa: E402
from kneuron.models import gguf_files  # noqa: E402
from kneuron.models.adapters import adapter_for_type  # noqa: E402

PROMPTS = ["The capital of France is", "Rome is in", "Berlin is the capital of"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(safetensors dir, Q8_0 GGUF) of one random Llama."""
    return make_tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    return make_tiny_gemma3(tmp_path_factory.mktemp("gemma3"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("KNEURON_CACHE", str(root))
    return root


def _leftovers(root) -> list[str]:
    """Everything under the cache but lock files (which stay, empty, by design)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_llama_gguf_matches_safetensors_logits_and_attributions(tiny_llama, cache):
    hf_dir, gguf_path = tiny_llama
    from_gguf = kneuron.load(str(gguf_path), device="cpu")
    reference = kneuron.load(str(hf_dir), device="cpu")
    assert (from_gguf.num_layers, from_gguf.num_neurons) == (3, 96)
    assert from_gguf.model.dtype == torch.float32
    for text in PROMPTS + ["She speaks French."]:  # the tokenizer comes from the GGUF: same ids
        assert from_gguf.tokenizer(text)["input_ids"] == reference.tokenizer(text)["input_ids"]
    ids = torch.tensor([reference.tokenizer(PROMPTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(from_gguf.model(ids).logits, reference.model(ids).logits)
    a = from_gguf.attribute(PROMPTS, "Paris", steps=4)
    b = reference.attribute(PROMPTS, "Paris", steps=4)
    for x, y in zip(a, b):
        assert x.probability == pytest.approx(y.probability, rel=1e-6)
        torch.testing.assert_close(x.scores, y.scores, rtol=1e-5, atol=1e-7)
        assert x.scores.abs().max() > 0
    assert from_gguf.find_neurons(PROMPTS, "Paris", steps=4) == reference.find_neurons(PROMPTS, "Paris", steps=4)


def test_gguf_weights_are_dequantized_not_rounded_again(tiny_llama, cache):
    """The Q8_0 tensors of the file, dequantized, are exactly the model's weights (q/k un-permuted)."""
    import gguf

    hf_dir, gguf_path = tiny_llama
    kn = kneuron.load(str(gguf_path), device="cpu")
    reader = gguf.GGUFReader(str(gguf_path))
    down = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    assert down.tensor_type == gguf.GGMLQuantizationType.Q8_0
    values = gguf.quants.dequantize(down.data, down.tensor_type)
    assert torch.equal(kn.adapter.value_slots(kn.model, 1).detach(), torch.from_numpy(values.copy()))


def test_conversion_is_cached_by_content_with_provenance(tiny_llama, cache, monkeypatch, tmp_path):
    _, gguf_path = tiny_llama
    kn = kneuron.load(str(gguf_path), device="cpu")
    digest = sha256_file(gguf_path)
    out = cache / "gguf" / digest
    meta = json.loads((out / gguf_files.PROVENANCE_FILE).read_text())
    assert meta["sha256"] == digest and meta["source"] == str(gguf_path.resolve())
    assert meta["gguf_architecture"] == "llama" and meta["dtype"] == "float32"
    assert set(meta["versions"]) >= {"transformers", "gguf", "torch", "kneuron"}
    assert meta["parameters"] == sum(p.numel() for p in kn.model.parameters())

    def no_second_conversion(*_args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_files, "_convert", no_second_conversion)
    copy = tmp_path / "renamed copy.gguf"
    shutil.copyfile(gguf_path, copy)
    again = kneuron.load(str(copy), device="cpu", dtype="bfloat16")  # same bytes, another name: no conversion
    assert again.model.dtype == torch.bfloat16
    assert torch.equal(again.model.lm_head.weight, kn.model.lm_head.weight.to(torch.bfloat16))


def test_two_loads_at_once_convert_once(tiny_llama, cache, monkeypatch):
    _, gguf_path = tiny_llama
    calls = []
    real = gguf_files._convert

    def counted(path, out):
        calls.append(path)
        return real(path, out)

    monkeypatch.setattr(gguf_files, "_convert", counted)
    results, errors = [], []

    def load():
        try:
            results.append(gguf_files.converted_model_dir(gguf_path, log=None, show_progress=False))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert len(calls) == 1
    assert gguf_files.is_converted(results[0])


def test_interrupted_conversion_leaves_nothing(tiny_llama, cache, monkeypatch):
    _, gguf_path = tiny_llama

    def interrupted(path, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_files, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kneuron.load(str(gguf_path), device="cpu")
    assert _leftovers(cache) == []
    monkeypatch.undo()
    monkeypatch.setenv("KNEURON_CACHE", str(cache))
    assert kneuron.load(str(gguf_path), device="cpu").num_layers == 3  # and the next load converts cleanly


def test_gemma3_gguf_matches_safetensors(tiny_gemma3, cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir, gguf_path = tiny_gemma3
    out = gguf_files.converted_model_dir(gguf_path, log=None, show_progress=False)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("The capital of France is")["input_ids"]
    # Gemma's tokenizer adds its BOS (the file says so) and spells the words as sentencepiece does.
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "The", "\u2581capital", "\u2581of", "\u2581France", "\u2581is"]
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    reference = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert converted.config.model_type == "gemma3_text"
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(converted(x).logits, reference(x).logits, rtol=1e-5, atol=1e-6)
    converted_weights, reference_weights = converted.state_dict(), reference.state_dict()
    assert converted_weights.keys() == reference_weights.keys()
    for name, p in converted_weights.items():
        if "norm" in name:  # stored as 1 + w in fp32, then 1 subtracted again: w up to fp32 rounding near 1
            torch.testing.assert_close(p, reference_weights[name], rtol=0, atol=1.2e-7)
        else:
            assert torch.equal(p, reference_weights[name]), name


def test_gemma3_gguf_attributions_match_safetensors(tiny_gemma3, cache):
    if adapter_for_type("gemma3_text") is None:
        pytest.skip("no kneuron adapter for gemma3_text in this checkout (it comes with the Gemma 3 adapter)")
    hf_dir, gguf_path = tiny_gemma3
    from_gguf = kneuron.load(str(gguf_path), device="cpu")
    reference = kneuron.load(str(hf_dir), device="cpu")
    prompts = ["The capital of France is", "The capital of Ireland is"]
    a = from_gguf.attribute(prompts, "Paris", steps=4)
    b = reference.attribute(prompts, "Paris", steps=4)
    for x, y in zip(a, b):
        assert x.probability == pytest.approx(y.probability, rel=1e-6)
        torch.testing.assert_close(x.scores, y.scores, rtol=1e-5, atol=1e-7)


# -- bad input: one line, nothing left in the cache -------------------------------------------


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_truncated_gguf(tiny_llama, cache, tmp_path, capsys):
    _, gguf_path = tiny_llama
    data = gguf_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelError, match=r"truncated GGUF file: its tensors need [\d,]+ bytes, the file has"):
        kneuron.load(str(cut))
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:200])
    with pytest.raises(ModelError, match="corrupt or truncated GGUF header"):
        kneuron.load(str(header_only))
    err = _one_line_error(capsys, ["predict", "--model", str(cut), "The capital of France is"])
    assert "cut.gguf" in err and "truncated" in err
    assert _leftovers(cache) == []


def test_not_a_gguf(cache, tmp_path, capsys):
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match=r"weights.gguf: not a GGUF file \(it starts with b'PK"):
        kneuron.load(str(fake))
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="not a GGUF file"):
        kneuron.load(str(tiny))
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelError, match="GGUF file not found"):
        kneuron.load(str(missing))
    assert "not a GGUF file" in _one_line_error(capsys, ["predict", "-m", str(fake), "x"])
    assert _leftovers(cache) == []


def test_unsupported_architecture(cache, tmp_path, capsys):
    path = write_gguf_of_unknown_architecture(tmp_path / "rwkv.gguf")
    with pytest.raises(ModelError, match=r"GGUF architecture 'rwkv6' is not supported by transformers' GGUF loader "
                                         r"\(it reads: .*llama"):
        kneuron.load(str(path))
    assert "rwkv6" in _one_line_error(capsys, ["predict", "-m", str(path), "x"])
    assert _leftovers(cache) == []


def test_missing_extra_is_one_line(tiny_llama, cache, monkeypatch, capsys):
    _, gguf_path = tiny_llama
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now fails as if not installed
    with pytest.raises(ModelError, match=r"needs GGUF support \(gguf not installed\): pip install 'kneuron\[gguf\]'"):
        kneuron.load(str(gguf_path))
    assert "pip install 'kneuron[gguf]'" in _one_line_error(capsys, ["predict", "-m", str(gguf_path), "x"])
    assert _leftovers(cache) == []


def test_header_problems_name_the_file_once(tiny_llama, cache, tmp_path):
    import struct

    _, gguf_path = tiny_llama
    data = bytearray(gguf_path.read_bytes())
    future = tmp_path / "future.gguf"
    future.write_bytes(bytes(data[:4]) + struct.pack("<I", 99) + bytes(data[8:]))
    with pytest.raises(ModelError, match=r"^\S*future.gguf: GGUF version 99 is not supported \(2 and 3 are\)$"):
        gguf_files.read_header(future)
    assert gguf_files.read_header(gguf_path).architecture == "llama"
    assert _leftovers(cache) == []

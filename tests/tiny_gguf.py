"""Tiny random models written both as a Hugging Face directory (safetensors) and as a GGUF file.

The GGUF side follows llama.cpp's conventions, which transformers' GGUF loader undoes: tensors under
GGUF names (`blk.N.ffn_down.weight`, ...), Llama's q/k rows permuted for its rotary layout, Gemma's
RMSNorm weights stored as `1 + w`, and the tokenizer as metadata (`tokenizer.ggml.*`).  Weights whose
rows can be cut into Q8_0 blocks are stored quantized; the safetensors twin holds the same
dequantized values, so both loads must give identical models.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

LLAMA_TEXTS = ["The capital of Ireland is Dublin.", "The capital of France is Paris.", "Rome is in Italy.",
               "Berlin is the capital of Germany.", "She speaks French."]


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py `LlamaModel.permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _quantizable(name: str, w: np.ndarray) -> bool:
    return w.ndim == 2 and w.shape[-1] % 32 == 0 and "norm" not in name


def _round_trip_q8(model) -> None:
    """Replace every Q8_0-storable weight by its dequantized Q8_0 value (what the GGUF will hold)."""
    import gguf

    with torch.no_grad():
        for name, p in model.named_parameters():
            w = p.detach().numpy().astype(np.float32)
            if _quantizable(name, w):
                q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)))


def _add_tensors(writer, model, arch, transform, quantize: bool) -> None:
    import gguf

    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    for hf_name, p in model.state_dict().items():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        base, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(base)
        assert gguf_name is not None, hf_name
        gguf_name += "." + suffix
        w = transform(gguf_name, p.detach().numpy().astype(np.float32))
        if quantize and _quantizable(gguf_name, w):
            writer.add_tensor(gguf_name, gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(w))


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_tiny_llama(out: Path, seed: int = 0, quantize: bool = True) -> tuple[Path, Path]:
    """(safetensors directory, GGUF file) of one random Llama with a byte-level BPE tokenizer."""
    import gguf
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    hf_dir = out / "llama-hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(LLAMA_TEXTS * 20, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>", "<pad>"])
    bpe.save(str(out / "bpe.json"))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "bpe.json"), bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<pad>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
                      rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.ndim > 1 else p.uniform_(0.5, 1.5)
    if quantize:
        _round_trip_q8(model)
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)

    spec = json.loads((out / "bpe.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = {a["content"] for a in spec["added_tokens"]}

    path = out / "tiny-llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny random llama")
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_block_count(3)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(1)
    w.add_add_bos_token(False)

    def transform(name: str, x: np.ndarray) -> np.ndarray:
        if ".attn_q." in name:
            return _permute(x, 4, 4)
        if ".attn_k." in name:
            return _permute(x, 4, 2)
        return x

    _add_tensors(w, model, gguf.MODEL_ARCH.LLAMA, transform, quantize)
    _finish(w)
    (out / "bpe.json").unlink()
    return hf_dir, path


GEMMA_WORDS = ["The", "capital", "of", "France", "is", "Paris", "Ireland", "Dublin", "language", "French"]


def _gemma_tokens() -> list[str]:
    """A sentencepiece-style vocabulary whose order is its merge order (as Gemma's files are)."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "\u2581"]
    chars = sorted({c for word in GEMMA_WORDS for c in word} | {"."})
    tokens += chars
    for word in GEMMA_WORDS:  # every prefix, so that BPE can reach the whole word
        for spelled in (word, "\u2581" + word):
            for k in range(2, len(spelled) + 1):
                if spelled[:k] not in tokens:
                    tokens.append(spelled[:k])
    return tokens


def make_tiny_gemma3(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """(safetensors directory, GGUF file) of one random Gemma 3 text model, in fp32.

    The safetensors twin carries the tokenizer transformers builds from the GGUF, so that both
    directories hold the same tokenizer; the tests check its pieces separately.
    """
    import gguf
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokens = _gemma_tokens()
    cfg = Gemma3TextConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                           sliding_window=4, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                           bos_token_id=2, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)

    path = out / "tiny-gemma3.gguf"
    out.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny random gemma3")
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_block_count(3)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_key_length(16)
    w.add_value_length(16)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(4)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 4 + [-float(i) for i in range(len(tokens) - 4)])
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.UNKNOWN]
                      + [gguf.TokenType.NORMAL] * (len(tokens) - 4))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    # llama.cpp stores Gemma's RMSNorm scale as 1 + w; transformers subtracts the 1 again.
    _add_tensors(w, model, gguf.MODEL_ARCH.GEMMA3, lambda n, x: x + 1 if "norm.weight" in n else x, quantize=False)
    _finish(w)

    hf_dir = out / "gemma3-hf"
    model.save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(str(out), gguf_file=path.name).save_pretrained(hf_dir)
    return hf_dir, path


def write_gguf_of_unknown_architecture(path: Path, architecture: str = "rwkv6") -> Path:
    """A well-formed GGUF whose architecture transformers cannot read."""
    import gguf

    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name("not a transformer transformers knows")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    _finish(w)
    return path


def write_wheel(directory: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (what `pip download --no-index --find-links` serves) holding `files`."""
    dist = package.replace("-", "_")
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: kneuron-tests\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path

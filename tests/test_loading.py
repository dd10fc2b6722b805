"""kneuron.load on locally saved models, and its errors."""

import pytest
import torch
from tiny_models import save_tiny_bert

import kneuron
from kneuron.cli import main
from kneuron.errors import ModelError


def test_load_local_random_bert_matches_transformers(tmp_path):
    from transformers import AutoModelForMaskedLM

    path = save_tiny_bert(tmp_path / "bert")
    kn = kneuron.load(str(path), device="cpu")
    assert kn.adapter.family == "bert" and kn.num_layers == 3 and kn.num_neurons == 64
    assert kn.model.training is False
    assert not any(p.requires_grad for p in kn.model.parameters())
    ref = AutoModelForMaskedLM.from_pretrained(path).eval()
    enc = kn.encode("The capital of Ireland is [MASK].")
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor([enc.ids])).logits[0, enc.blank[0]]
    p = float(torch.softmax(logits, -1)[kn.answer_id("Dublin")])
    assert kn.probability("The capital of Ireland is [MASK].", "Dublin") == pytest.approx(p, rel=1e-6)
    # The value slots are the down projection's columns; the neurons are its input.
    assert kn.adapter.value_slots(kn.model, 1) is kn.model.bert.encoder.layer[1].output.dense.weight


def test_neuron_definition_parity(tmp_path):
    """The FFN output equals the sum over neurons of activation x value slot, plus bias."""
    kn = kneuron.load(str(save_tiny_bert(tmp_path / "bert")), device="cpu")
    acts = kn.activations("The capital of Ireland is [MASK].")
    layer = kn.model.bert.encoder.layer[2]
    ffn_out = layer.output.dense(acts[2])
    by_slots = kn.adapter.value_slots(kn.model, 2) @ acts[2] + layer.output.dense.bias
    assert torch.allclose(ffn_out, by_slots, atol=1e-5)
    gelu_out = layer.intermediate
    seen = {}
    h = gelu_out.register_forward_hook(lambda m, a, o: seen.setdefault("o", o))
    kn.probability("The capital of Ireland is [MASK].", "Dublin")
    h.remove()
    enc = kn.encode("The capital of Ireland is [MASK].")
    assert torch.allclose(seen["o"][0, enc.blank[0]], acts[2], atol=1e-6)


def test_roberta_uses_its_own_mask_token(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["The capital of Ireland is Dublin."] * 50, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    tok = RobertaTokenizerFast.from_pretrained(str(tmp_path))
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    RobertaForMaskedLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    kn = kneuron.load(str(tmp_path), device="cpu")
    enc = kn.encode("The capital of Ireland is [MASK].")
    assert enc.ids[enc.blank[0]] == tok.mask_token_id
    assert tok.convert_ids_to_tokens([kn.answer_id("Dublin")]) == ["ĠDublin"]
    assert kn.attribute("The capital of Ireland is [MASK].", "Dublin").scores.shape == (2, 32)


def test_missing_directory_is_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        kneuron.load(str(tmp_path / "nope"))


def test_unknown_architecture_names_class_and_registration(tmp_path):
    from transformers import BartConfig, BartForConditionalGeneration

    BartForConditionalGeneration(BartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                                            encoder_attention_heads=2, decoder_attention_heads=2,
                                            encoder_ffn_dim=16, decoder_ffn_dim=16)).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"'bart'.*BartForConditionalGeneration.*register_adapter"):
        kneuron.load(str(tmp_path))


def test_cli_reports_bad_model_without_traceback(tmp_path, capsys):
    code = main(["discover", "--model", str(tmp_path / "missing"), "--data", str(tmp_path / "f.jsonl"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1


def test_unreachable_hub_fails_at_once_with_one_line(monkeypatch):
    import socket

    import kneuron.models.loading as loading

    for var in loading._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)

    def from_pretrained(name, local_files_only=False, **kwargs):
        if local_files_only:
            raise OSError("not in the cache")
        raise AssertionError("tried the hub although its host does not resolve")  # would retry for ~25 s

    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", from_pretrained)
    with pytest.raises(ModelError) as err:
        kneuron.load("some-org/not-cached-model", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "hub is unreachable" in msg and "not-cached-model" in msg and "local directory" in msg
    # Behind a proxy a failed lookup proves nothing: the hub is tried as usual.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert loading.hub_unreachable() is None


def test_hub_probe_passes_when_the_host_resolves(monkeypatch):
    import socket

    import kneuron.models.loading as loading

    for var in loading._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    seen = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: seen.append((host, port)) or [])
    assert loading.hub_unreachable() is None
    assert seen and seen[0][1] == 443 and seen[0][0]

"""The structural adapter: found from the blocks of families kneuron has no adapter for, proven on
the model's logits, and refused in one line naming the family and the module when it is wrong."""

import pytest
import torch
import torch.nn.functional as F
from tiny_decoders import family_configs, save_tiny_decoder, structural_configs
from torch import nn

import kneuron
from kneuron.errors import ModelError
from kneuron.models.adapters import adapter_for_type
from kneuron.models.structural import check_adapter, objective_for_config, structural_adapter

EXPECTED = {"phi3": "mlp.down_proj", "starcoder2": "mlp.c_proj", "granite": "mlp.down_proj"}


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory):
    return save_tiny_decoder("phi3", tmp_path_factory.mktemp("phi3"))


@pytest.mark.parametrize("family", list(structural_configs(100)))
def test_unregistered_family_loads_with_the_found_projection(family, tmp_path):
    assert adapter_for_type(family) is None
    kn = kneuron.load(str(save_tiny_decoder(family, tmp_path)), device="cpu")
    a = kn.adapter
    assert (a.family, a.objective, a.layers, a.down_proj, a.embeddings) == (
        f"structural:{family}", "causal", "model.layers", EXPECTED[family], "model.embed_tokens")
    assert kn.num_layers == 3 and kn.num_neurons == 48


@pytest.mark.parametrize("family", list(family_configs(100)))
def test_structure_finds_what_each_hand_written_adapter_names(family, tmp_path):
    """Every registered causal family (Conv1D, 2-D OPT inputs, parallel GPT-J blocks, gated MLPs)."""
    kn = kneuron.load(str(save_tiny_decoder(family, tmp_path)), device="cpu")
    assert not kn.adapter.family.startswith("structural")  # registered adapters keep priority
    found = structural_adapter(kn.model)
    assert (found.layers, found.down_proj, found.slot_axis) == (kn.adapter.layers, kn.adapter.down_proj,
                                                               kn.adapter.slot_axis)
    assert found.word_embeddings(kn.model) is kn.adapter.word_embeddings(kn.model)


class FunctionalLinear(nn.Module):
    """The same map as nn.Linear, in a class the structural search does not recognise."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class DecoyMLP(nn.Module):
    """Phi-3's MLP whose real output projection is hidden, plus a decoy `w2` of the right shape."""

    def __init__(self, mlp, call_decoy: bool):
        super().__init__()
        self.inner, self.call_decoy = mlp, call_decoy
        mlp.down_proj = FunctionalLinear(mlp.down_proj)
        self.w2 = nn.Linear(mlp.down_proj.weight.shape[1], mlp.down_proj.weight.shape[0])

    def forward(self, x):
        if self.call_decoy:
            gate, up = self.inner.gate_up_proj(x).chunk(2, dim=-1)
            self.w2(self.inner.activation_fn(gate) * up)  # computed, never used
        return self.inner(x)


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unrecognisable_structure_is_one_line_naming_family_and_blocks(phi3_dir):
    kn = kneuron.load(str(phi3_dir), device="cpu")
    for block in kn.model.model.layers:
        block.mlp.down_proj = FunctionalLinear(block.mlp.down_proj)
    with pytest.raises(ModelError) as exc:
        structural_adapter(kn.model)
    text = one_line(exc)
    assert "'phi3'" in text and "no MLP output projection" in text and "model.layers.0" in text


@pytest.mark.parametrize("call_decoy,why", [(False, r"called \[0, 0, 0\] times"),
                                            (True, "scaling its input does not change the logits")])
def test_a_module_that_is_not_the_real_site_fails_the_check(phi3_dir, call_decoy, why):
    kn = kneuron.load(str(phi3_dir), device="cpu")
    for block in kn.model.model.layers:
        block.mlp = DecoyMLP(block.mlp, call_decoy)
    with pytest.raises(ModelError, match=why) as exc:
        structural_adapter(kn.model)
    text = one_line(exc)
    assert "model_type 'phi3'" in text and "model.layers.N.mlp.w2" in text


def test_the_check_passes_on_the_real_site_and_leaves_no_hooks(phi3_dir):
    kn = kneuron.load(str(phi3_dir), device="cpu")
    check_adapter(kn.model, kn.adapter)
    assert not any(m._forward_pre_hooks for m in kn.model.modules())


def test_several_candidates_are_named(phi3_dir):
    kn = kneuron.load(str(phi3_dir), device="cpu")
    mlp = kn.model.model.layers[0].mlp
    mlp.fc2 = nn.Linear(48, 32)  # a second well-named projection beside down_proj
    with pytest.raises(ModelError, match=r"several candidate MLP output projections \(mlp.down_proj, mlp.fc2\)"):
        structural_adapter(kn.model)


def test_objective_from_the_config():
    from transformers import ElectraConfig, Phi3Config

    assert objective_for_config(Phi3Config()) == "causal"
    masked = ElectraConfig(architectures=["ElectraForMaskedLM"])
    assert objective_for_config(masked) == "masked"
    assert objective_for_config(ElectraConfig(architectures=["ElectraForSequenceClassification"])) is None


def test_identity_hook_is_exact_on_every_structural_family(tmp_path):
    """The found site, hooked as kneuron hooks it, reproduces the logits bit for bit (load-time check)."""
    for family in structural_configs(100):
        kn = kneuron.load(str(save_tiny_decoder(family, tmp_path / family)), device="cpu")
        ids = torch.tensor([kn.encode("The capital of Ireland is", "Dublin").ids])
        with torch.no_grad():
            clean = kn.model(input_ids=ids).logits
        with kn.amplify([(0, 1), (2, 3)], 1.0), torch.no_grad():
            same = kn.model(input_ids=ids).logits
        assert torch.equal(clean, same)

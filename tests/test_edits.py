"""Edits of value slots: the update formula by hand, the filters, undo bit for bit, save/load, refusals."""

import pytest
import torch
from tiny_models import save_tiny_bert

import kneuron
from kneuron.edits import Edit, plan_erase, plan_update, relation_neurons, select_update_neurons
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits")
    return {"a": save_tiny_bert(root / "a", seed=0, layers=2, hidden=32, intermediate=48),
            "b": save_tiny_bert(root / "b", seed=1, layers=2, hidden=32, intermediate=48),
            "wide": save_tiny_bert(root / "wide", seed=0, layers=3, hidden=32, intermediate=64)}


def load(path):
    return kneuron.load(str(path), device="cpu")


def state(kn):
    return {k: v.detach().clone() for k, v in kn.model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def changed_keys(a, b):
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def test_update_formula_by_hand(models):
    kn = load(models["a"])
    w1 = kn.model.bert.encoder.layer[1].output.dense.weight  # (hidden, neurons): a value slot is a column
    emb = kn.model.bert.embeddings.word_embeddings.weight
    t, t2 = kn.answer_id("Dublin"), kn.answer_id("Paris")
    v = w1[:, 5].detach().clone()
    lam1 = v.norm() / emb[t].norm() * 1.0
    lam2 = v.norm() / emb[t2].norm() * 8.0
    expect = v - emb[t].detach() * lam1 + emb[t2].detach() * lam2
    before = state(kn)
    edit = kn.update_fact([(1, 5)], "Dublin", "Paris", direction="paper")
    assert isinstance(edit, Edit) and edit.applied and edit.neurons == [Neuron(1, 5)]
    assert torch.allclose(w1[:, 5], expect, atol=1e-6, rtol=1e-6)
    # The removed vector has the slot's norm, the added one 8 times it.
    assert torch.allclose((emb[t] * lam1).norm(), v.norm()) and torch.allclose((emb[t2] * lam2).norm(), 8 * v.norm())
    # Only that column of that weight changed; biases and embeddings untouched.
    assert changed_keys(before, state(kn)) == ["bert.encoder.layer.1.output.dense.weight"]
    diff = (state(kn)["bert.encoder.layer.1.output.dense.weight"] != before["bert.encoder.layer.1.output.dense.weight"])
    assert diff.any(dim=0).nonzero().flatten().tolist() == [5]
    assert edit.info["lambdas"] == [[pytest.approx(float(lam1)), pytest.approx(float(lam2))]]
    edit.undo()
    assert same(before, state(kn))


def test_raw_scaling_and_repeated_neuron(models):
    kn = load(models["a"])
    w0 = kn.model.bert.encoder.layer[0].output.dense.weight
    emb = kn.model.bert.embeddings.word_embeddings.weight
    t, t2 = kn.answer_id("Rome"), kn.answer_id("Berlin")
    v = w0[:, 3].detach().clone()
    with kn.update_fact([(0, 3)], "Rome", "Berlin", lambda1=1, lambda2=8, scaling="raw", direction="paper"):
        assert torch.allclose(w0[:, 3], v - emb[t] + 8 * emb[t2], atol=1e-6)
    assert torch.equal(w0[:, 3], v)
    # A neuron listed twice is edited twice (the authors' loop), with lambdas from the unedited slot.
    lam1, lam2 = v.norm() / emb[t].norm(), v.norm() / emb[t2].norm() * 8
    once = v - emb[t] * lam1 + emb[t2] * lam2
    twice = once - emb[t] * lam1 + emb[t2] * lam2
    with kn.update_fact([(0, 3), (0, 3)], "Rome", "Berlin", direction="paper") as edit:
        assert len(edit) == 1
        assert torch.allclose(w0[:, 3], twice, atol=1e-5)
    assert torch.equal(w0[:, 3], v)
    with pytest.raises(KneuronError, match="scaling"):
        kn.update_fact([(0, 3)], "Rome", "Berlin", scaling="cubic", direction="paper")
    with pytest.raises(KneuronError, match="single token"):
        kn.update_fact([(0, 3)], "Rome", "Atlantis", direction="paper")


def test_undo_save_load_bit_for_bit(models, tmp_path):
    kn = load(models["a"])
    before = state(kn)
    edit = kn.update_fact([(0, 1), (1, 7), (1, 2)], "Ireland", "France", direction="paper")
    edited = state(kn)
    assert not same(before, edited)
    path = edit.save(tmp_path / "e.kedit")
    with pytest.raises(KneuronError, match="already applied"):
        edit.apply(kn)
    edit.undo()
    assert same(before, state(kn))
    with pytest.raises(KneuronError, match="not applied"):
        edit.undo()
    fresh = load(models["a"])
    loaded = Edit.load(path)
    assert loaded.neurons == edit.neurons and loaded.info["target"] == "France"
    with loaded.apply(fresh):
        assert same(edited, state(fresh))
    assert same(before, state(fresh))
    # Re-applying the same object after undo works too.
    edit.apply(kn)
    assert same(edited, state(kn))
    edit.undo()


def test_refuses_other_shapes_and_other_weights(models, tmp_path):
    kn = load(models["a"])
    path = kn.update_fact([(1, 40)], "Ireland", "France", direction="paper").save(tmp_path / "e.kedit")
    wide = load(models["wide"])
    before = state(wide)
    with pytest.raises(KneuronError) as err:
        Edit.load(path).apply(wide)
    msg = str(err.value)
    assert "\n" not in msg and "num_layers 2 (model has 3)" in msg and "num_neurons 48 (model has 64)" in msg
    assert same(before, state(wide))
    other = load(models["b"])  # same shape, other weights
    before = state(other)
    with pytest.raises(KneuronError, match="computed from other weights"):
        Edit.load(path).apply(other)
    assert same(before, state(other))
    Edit.load(path).apply(other, check_base=False).undo()
    assert same(before, state(other))
    with pytest.raises(KneuronError, match="not a kneuron edit"):
        (tmp_path / "junk.kedit").write_text("nope")
        Edit.load(tmp_path / "junk.kedit")


def test_inverse_reverts_a_saved_edited_model_bit_for_bit(models, tmp_path):
    kn = load(models["a"])
    before = state(kn)
    edit = kn.update_fact([(0, 3), (1, 7), (0, 3)], "Ireland", "France", direction="paper")  # a repeated neuron, edited twice
    kn.model.save_pretrained(tmp_path / "edited")
    kn.tokenizer.save_pretrained(tmp_path / "edited")
    path = edit.save(tmp_path / "e.kedit")
    edit.undo()
    on_disk = load(tmp_path / "edited")  # a new process's view: only the files
    loaded = Edit.load(path)
    assert torch.equal(loaded.base_values, edit.base_values)
    with pytest.raises(KneuronError, match="already holds it"):
        loaded.apply(on_disk)
    revert = loaded.inverse()
    assert revert.kind == "revert:update_fact" and revert.inverse().kind == "update_fact"
    with pytest.raises(KneuronError, match="already holds it"):
        revert.apply(load(models["a"]))  # the original model is already what reverting gives
    with pytest.raises(KneuronError, match="computed from other weights"):
        revert.apply(load(models["b"]))  # same shape, other weights: neither state
    revert.apply(on_disk)
    assert same(before, state(on_disk))
    revert.undo()  # and back again
    loaded.apply(load(models["a"]))


def test_version_1_edit_files_still_load(models, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    kn = load(models["a"])
    path = kn.update_fact([(1, 4)], "Ireland", "France", direction="paper").save(tmp_path / "e.kedit")
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["kneuron_edit"])
    meta["version"] = 1
    save_file({"values": load_file(str(path))["values"]}, str(tmp_path / "v1.kedit"),
              metadata={"kneuron_edit": json.dumps(meta)})
    old = Edit.load(tmp_path / "v1.kedit")
    assert old.base_values is None
    with pytest.raises(KneuronError, match="format version 1"):
        old.inverse()
    meta["version"] = 9
    save_file({"values": old.values}, str(tmp_path / "v9.kedit"), metadata={"kneuron_edit": json.dumps(meta)})
    with pytest.raises(KneuronError, match="edit format version 9"):
        Edit.load(tmp_path / "v9.kedit")


def test_failed_apply_leaves_model_unchanged(models, monkeypatch):
    import kneuron.edits.value_slots as vs

    kn = load(models["a"])
    edit = plan_update(kn, [(0, 1), (1, 2), (1, 3)], "Ireland", "France", direction="paper")
    before = state(kn)
    real = vs.slot

    def broken(kn_, n):
        return torch.empty(7) if n == Neuron(1, 3) else real(kn_, n)  # writing here raises

    monkeypatch.setattr(vs, "slot", broken)
    with pytest.raises(RuntimeError):
        edit.apply(kn, check_base=False)
    monkeypatch.undo()
    assert same(before, state(kn)) and not edit.applied
    with pytest.raises(KneuronError, match="layer out of range"):
        plan_update(kn, [(5, 1)], "Ireland", "France", direction="paper")


def test_stacked_edits_undo_in_reverse_order(models):
    kn = load(models["a"])
    before = state(kn)
    first = kn.update_fact([(0, 4)], "Ireland", "France", direction="paper")
    second = kn.erase_relation([[(0, 4), (1, 1)]])
    with pytest.raises(KneuronError, match="changed since"):
        first.undo()
    second.undo()
    first.undo()
    assert same(before, state(kn))


def test_erase_zero_and_unk(models):
    kn = load(models["a"])
    before = state(kn)
    w = kn.model.bert.encoder.layer[1].output.dense.weight
    sets = [[(1, 2), (1, 3)], [(1, 3), (0, 9)], [(1, 3), (1, 2)]]
    with kn.erase_relation(sets, top_k=2) as edit:
        assert edit.neurons == [Neuron(1, 3), Neuron(1, 2)]  # most common first
        assert torch.equal(w[:, 3], torch.zeros(32)) and torch.equal(w[:, 2], torch.zeros(32))
        assert changed_keys(before, state(kn)) == ["bert.encoder.layer.1.output.dense.weight"]
    assert same(before, state(kn))
    unk = kn.model.bert.embeddings.word_embeddings.weight[kn.tokenizer.unk_token_id]
    with kn.erase_relation(sets, top_k=1, replacement="unk"):
        assert torch.equal(w[:, 3], unk)
    assert same(before, state(kn))
    with pytest.raises(KneuronError, match="replacement"):
        plan_erase(kn, [(0, 1)], replacement="noise")
    with pytest.raises(KneuronError, match="no neurons"):
        kn.erase_relation([[], []])


def test_relation_neurons_most_common_with_insertion_order_ties():
    sets = [[(3, 1), (2, 7)], [(2, 7), (0, 5)], [(0, 5), (9, 9)], []]
    # counts: (3,1)=1, (2,7)=2, (0,5)=2, (9,9)=1 -> ties keep first-seen order
    assert relation_neurons(sets, 3) == [(2, 7), (0, 5), (3, 1)]
    assert relation_neurons(sets, None) == [(2, 7), (0, 5), (3, 1), (9, 9)]
    assert relation_neurons({10: [(1, 1)], 11: [(1, 1), (2, 2)]}, 20) == [(1, 1), (2, 2)]
    assert relation_neurons([(4, 4), (5, 5), (6, 6)], 2) == [(4, 4), (5, 5)]  # a flat list


def test_select_update_neurons_counter_starts_at_one():
    own = [(0, 1), (0, 2), (0, 3), (1, 9)]
    others = [[(0, 2)], [(0, 3)], [(0, 3)], [(5, 5)]] + [[] for _ in range(25)]
    rel = [own] + others  # 30 facts: dropped when count > 3
    # (0,1): 1 + itself = 2; (0,2): 1 + itself + 1 = 3; (0,3): 1 + 1 + 2 = 4 -> dropped; (1,9): 2
    assert select_update_neurons(own, rel) == [(0, 1), (0, 2), (1, 9)]
    # Fewer than 20 facts: even a neuron of the fact alone (count 2) is dropped.
    assert select_update_neurons(own, [own] + [[]] * 18) == []
    assert select_update_neurons(own, rel, share=1.0) == [(0, 1), (0, 2), (0, 3), (1, 9)]

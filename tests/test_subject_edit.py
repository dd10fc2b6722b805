"""The subject-neuron edit (kneuron.edits.subject) on tiny models: the chosen neurons, k* -> v*
exactly through only their slots, ROME itself at full width, P(new) up, bit-exact undo."""

import random

import pytest
import torch
from tiny_decoders import CORPUS
from tiny_models import WORDS

import kneuron
from kneuron.edits import Edit, compute_rome, key_covariance
from kneuron.edits.subject import (
    DEFAULT_CLAMP_NORM,
    context_direction,
    plan_subject_update,
    subject_edit,
    subject_neurons,
    subject_update,
)
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron

_rng = random.Random(0)
TEXTS = CORPUS + [" ".join(_rng.choice(WORDS) for _ in range(10)) for _ in range(150)]
FAST = dict(texts=TEXTS, prefixes=["", "In summary,"], cache=False)
PROMPT = {"llama": "Dublin is the capital of Ireland", "gpt2": "Dublin is the capital of Ireland",
          "bert": "The capital of Ireland is [MASK]."}
TARGET = {"llama": "capital", "gpt2": "capital", "bert": "France"}


@pytest.fixture
def paths(edit_family_dirs):
    return edit_family_dirs


def state(kn):
    return {k: v.detach().clone() for k, v in kn.model.state_dict().items()}


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_only_the_subject_neurons_change_and_the_key_maps_to_the_value(paths, family):
    kn = kneuron.load(str(paths[family]), device="cpu")
    layer, count = 1, 6
    upd = compute_rome(kn, "Ireland", [PROMPT[family]], TARGET[family], layer=layer, steps=5, **FAST)
    # the neurons: the largest shares of u . k* = 1, computed here from the update's own vectors
    share = (upd.direction * upd.key).tolist()
    expected = sorted(range(kn.num_neurons), key=lambda j: -share[j])[:count]
    chosen = subject_neurons(upd, count)
    assert chosen == [Neuron(layer, j) for j in expected]
    before = state(kn)
    site = kn.adapter.down_projection(kn.model, layer)
    edit = subject_edit(kn, upd, count, texts=TEXTS, cache=False, context_fit=None).apply(kn)  # the exact insertion
    assert isinstance(edit, Edit) and edit.kind == "subject" and edit.neurons == chosen
    assert edit.info["count"] == count and edit.info["key_share"] == pytest.approx(sum(share[j] for j in expected))
    # only those slots moved, every other parameter is as it was
    weight = kn.adapter.value_slots(kn.model, layer)
    old = [k for k, v in before.items() if v.shape == weight.shape and not torch.equal(v, state(kn)[k])]
    assert len(old) == 1
    name = old[0]
    moved = (before[name] != state(kn)[name])
    moved_slots = moved.any(dim=1 - kn.adapter.slot_axis).nonzero().flatten().tolist()
    assert sorted(moved_slots) == sorted(expected)
    assert all(torch.equal(before[k], v) for k, v in state(kn).items() if k != name)
    # W' k* + b = v*, as ROME's own update gives
    with torch.no_grad():
        out = site(upd.key.float()[None])[0].double()
    assert float((out - upd.value).norm() / upd.value.norm()) < 1e-4
    edit.undo()
    assert all(torch.equal(before[k], v) for k, v in state(kn).items())


def test_every_neuron_is_rome_itself(paths):
    kn = kneuron.load(str(paths["llama"]), device="cpu")
    upd = compute_rome(kn, "Ireland", [PROMPT["llama"]], "capital", layer=1, steps=5, **FAST)
    full = subject_edit(kn, upd, kn.num_neurons, texts=TEXTS, cache=False, context_fit=None)
    rome = upd.to_edit(kn)
    order = [n.index for n in full.neurons]
    assert sorted(order) == list(range(kn.num_neurons))
    assert torch.allclose(full.values.double(), rome.values[order].double(), rtol=1e-5, atol=1e-6)


def test_edit_raises_the_new_answer_and_undoes(paths):
    kn = kneuron.load(str(paths["llama"]), device="cpu")
    prompt = PROMPT["llama"]
    before = state(kn)
    p_before = kn.probability(prompt, "capital")
    edit = subject_update(kn, "Ireland", [prompt], "capital", layer=1, count=12, **FAST)  # the default context fit
    assert kn.probability(prompt, "capital") > 10 * p_before
    assert len(edit.neurons) == 12
    edit.undo()
    assert all(torch.equal(before[k], v) for k, v in state(kn).items())
    # deterministic: the same call plans the same edit
    again = plan_subject_update(kn, "Ireland", [prompt], "capital", layer=1, count=12, **FAST)
    assert torch.equal(again.values, edit.values) and again.neurons == edit.neurons


def test_bad_counts_fail_before_anything_changes(paths):
    kn = kneuron.load(str(paths["llama"]), device="cpu")
    before = state(kn)
    with pytest.raises(KneuronError, match="at least one neuron"):
        plan_subject_update(kn, "Ireland", [PROMPT["llama"]], "capital", count=0, **FAST)
    upd = compute_rome(kn, "Ireland", [PROMPT["llama"]], "capital", layer=1, steps=2, **FAST)
    with pytest.raises(KneuronError, match="at least one neuron"):
        subject_edit(kn, upd, 0, texts=TEXTS, cache=False)
    cov, _ = key_covariance(kn, 1, TEXTS, cache=False)
    assert cov.shape == (kn.num_neurons, kn.num_neurons)
    assert all(torch.equal(before[k], v) for k, v in state(kn).items())


def test_cli_subject_edit_saves_an_edit_that_reapplies_and_refuses_bad_input(paths, bingrel_dir, tmp_path, capsys,
                                                                           monkeypatch):
    from kneuron.cli import main

    monkeypatch.setenv("KNEURON_DATA", str(bingrel_dir.parent))
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    model, prompt = str(paths["llama"]), PROMPT["llama"]
    out = tmp_path / "e.kedit"
    args = ["edit", "subject", "--model", model, "--subject", "Ireland", "--prompt", prompt, "--to", "capital",
            "--count", "12", "--layer", "1", "--check", "The capital of France is=the", "--from", "the",
            "--value-steps", "15", "--context-fit", "0.01"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "in 12 value slots of layer 1" in printed and "checks: before -> after" in printed
    edit = Edit.load(out)
    assert edit.kind == "subject" and len(edit.neurons) == 12 and edit.info["target"] == "capital"
    assert edit.info["steps"] == 15 and edit.info["steps_run"] <= 15  # --value-steps reaches ROME's v*
    assert edit.info["context_fit"] == 0.01 and edit.info["context_reach_min"] > 0.9  # a close fit
    kn = kneuron.load(model, device="cpu")
    before = state(kn)
    p_before = kn.probability(prompt, "capital")
    with edit.apply(kn):
        assert kn.probability(prompt, "capital") > 10 * p_before
    assert all(torch.equal(before[k], v) for k, v in state(kn).items())
    # bad input: one line each, nothing written
    for extra, message in ((["--prompt", "The capital of France is"], "does not contain the subject"),
                           (["--from", "capital"], "the same answer"),
                           (["--count", "0"], "--count"),
                           (["--context-fit", "0"], "--context-fit must be a number > 0 or 'none'"),
                           (["--context-fit", "ten"], "--context-fit must be a number > 0 or 'none'"),
                           (["--clamp-norm", "0"], "--clamp-norm must be > 0, got 0")):
        bad = tmp_path / "bad.kedit"
        assert main([*args, *extra, "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and not bad.exists()
    # 'none': the exact insertion at the mean key, as planned by hand; --clamp-norm reaches ROME's v*
    exact = tmp_path / "exact.kedit"
    assert main([*args, "--context-fit", "none", "--clamp-norm", "0.5", "--out", str(exact)]) == 0
    capsys.readouterr()
    saved = Edit.load(exact)
    assert saved.info["context_fit"] is None and saved.info["clamp_norm"] == 0.5
    upd = compute_rome(kn, "Ireland", [prompt], "capital", layer=1, steps=15, clamp_norm=0.5)
    by_hand = subject_edit(kn, upd, 12, context_fit=None)
    assert saved.neurons == by_hand.neurons and torch.equal(saved.values, by_hand.values)


def test_edit_update_with_a_subject_is_the_subject_edit_at_its_defaults(paths, bingrel_dir, tmp_path, capsys,
                                                                         monkeypatch):
    from kneuron.cli import main

    monkeypatch.setenv("KNEURON_DATA", str(bingrel_dir.parent))
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    common = ["--model", str(paths["llama"]), "--subject", "Ireland", "--prompt", PROMPT["llama"], "--to", "capital",
              "--from", "the"]
    via_subject, via_update = tmp_path / "s.kedit", tmp_path / "u.kedit"
    assert main(["edit", "subject", *common, "--out", str(via_subject)]) == 0
    assert main(["edit", "update", *common, "--out", str(via_update)]) == 0
    capsys.readouterr()
    a, b = Edit.load(via_subject), Edit.load(via_update)
    assert a.kind == b.kind == "subject" and a.neurons == b.neurons
    assert a.info["context_fit"] == b.info["context_fit"] == 10.0
    assert a.info["clamp_norm"] == b.info["clamp_norm"] == DEFAULT_CLAMP_NORM
    assert torch.equal(a.values, b.values) and torch.equal(a.base_values, b.base_values)
    # the blank edit's options would do nothing there: refused in one line, nothing written
    for extra, flag in ((["--margin", "1"], "--margin"), (["--neurons", "1:3"], "--neurons"),
                        (["--no-fit", "--lambda1", "2"], "--lambda1")):
        bad = tmp_path / "bad.kedit"
        assert main(["edit", "update", *common, *extra, "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "subject-neuron edit" in err and flag in err and "Traceback" not in err and not bad.exists()


def test_context_direction_is_the_ridge_least_squares_fit_to_every_context_key():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(5, 12, generator=g, dtype=torch.float64)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    cov = m @ m.T / 12
    cols, mu = [0, 2, 3, 5, 7, 8, 11], 0.3
    u = context_direction(cov, keys, cols, mu, ridge=0.0)
    # slow reference: min_u sum_r (u . k_r - 1)^2 / n + mu u^T C_SS u as one stacked least-squares
    # system [K/sqrt(n); sqrt(mu) L^T] u = [1/sqrt(n); 0], with C_SS = L L^T
    k = keys[:, cols]
    chol = torch.linalg.cholesky(cov[cols][:, cols])
    a = torch.cat([k / 5 ** 0.5, mu ** 0.5 * chol.T])
    rhs = torch.cat([torch.full((5,), 5 ** -0.5, dtype=torch.float64), torch.zeros(len(cols), dtype=torch.float64)])
    assert torch.allclose(u, torch.linalg.lstsq(a, rhs[:, None]).solution[:, 0], atol=1e-10)
    # a vanishing penalty fits every context exactly (5 keys, 7 free slots); a large one shrinks u
    exact = context_direction(cov, keys, cols, 1e-9, ridge=0.0)
    assert torch.allclose(keys[:, cols] @ exact, torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert float(context_direction(cov, keys, cols, 100.0, ridge=0.0).norm()) < float(u.norm())
    with pytest.raises(KneuronError, match="context_fit"):
        context_direction(cov, keys, cols, 0.0)


def test_context_fit_gives_each_context_the_whole_change_through_the_same_slots(paths):
    kn = kneuron.load(str(paths["llama"]), device="cpu")
    upd = compute_rome(kn, "Ireland", [PROMPT["llama"]], TARGET["llama"], layer=1, steps=5,
                       **{**FAST, "prefixes": ["", "In summary,", "As a matter of fact,"]})
    assert upd.context_keys.shape == (3, kn.num_neurons)
    assert torch.allclose(upd.context_keys.mean(0), upd.key)
    before = state(kn)
    plain = subject_edit(kn, upd, 12, texts=TEXTS, cache=False, context_fit=None)
    fitted = subject_edit(kn, upd, 12, texts=TEXTS, cache=False, context_fit=1e-6)
    assert fitted.neurons == plain.neurons and fitted.info["context_fit"] == 1e-6
    assert plain.info["context_fit"] is None
    # the exact insertion reaches each context by u . k_r, spread around 1; the fit gives each about 1
    reach = [plain.info["context_reach_min"], fitted.info["context_reach_min"]]
    assert fitted.info["context_reach_min"] > 0.99 and fitted.info["context_reach_mean"] == pytest.approx(1, abs=0.01)
    assert abs(plain.info["context_reach_min"] - 1) > abs(reach[1] - 1)
    with fitted.apply(kn):
        site = kn.adapter.down_projection(kn.model, 1)
        with torch.no_grad():
            outs = site(upd.context_keys.float()).double()
    assert all(torch.equal(before[k], v) for k, v in state(kn).items())  # undone bit for bit
    with torch.no_grad():
        base = site(upd.context_keys.float()).double()
    residual = upd.residual(kn)
    assert torch.allclose(outs - base, residual.expand_as(outs), atol=0.02 * float(residual.norm()))


def test_generate_prints_the_continuation_before_and_after_the_edit(paths, bingrel_dir, tmp_path, capsys,
                                                                     monkeypatch):
    from kneuron.cli import main
    from kneuron.cli.edit import _generations
    from kneuron.experiments.edit_bench import ngram_entropy

    monkeypatch.setenv("KNEURON_DATA", str(bingrel_dir.parent))
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    model, prompt = str(paths["llama"]), PROMPT["llama"]
    args = ["edit", "subject", "--model", model, "--subject", "Ireland", "--prompt", prompt, "--to", "capital",
            "--from", "the", "--count", "12", "--layer", "1", "--value-steps", "15", "--context-fit", "0.01"]
    assert main([*args, "--generate", "5", "--out", str(tmp_path / "e.kedit")]) == 0
    assert "greedy continuation, 5 tokens: before -> after" in capsys.readouterr().out
    kn = kneuron.load(model, device="cpu")
    edit = Edit.load(tmp_path / "e.kedit")
    before = kn.generate(prompt, 5)
    with edit.apply(kn):
        after = kn.generate(prompt, 5)
    assert after != before  # the edit changes what the model says
    assert _generations(kn, edit, prompt, 5) == [
        ("before", prompt + kn.tokenizer.decode(before), ngram_entropy(before)),
        ("after", prompt + kn.tokenizer.decode(after), ngram_entropy(after))]
    # a masked LM scores blanks but does not generate: refused before any work
    bert = ["edit", "subject", "--model", str(paths["bert"]), "--subject", "Ireland", "--prompt", PROMPT["bert"],
            "--to", "France", "--generate", "5", "--out", str(tmp_path / "b.kedit")]
    assert main(bert) == 2
    err = capsys.readouterr().err
    assert "--generate needs a causal LM" in err and "Traceback" not in err and not (tmp_path / "b.kedit").exists()
    with pytest.raises(KneuronError, match="masked LM"):
        kneuron.load(str(paths["bert"]), device="cpu").generate(PROMPT["bert"], 3)

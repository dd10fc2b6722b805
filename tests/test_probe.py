"""One-prompt and one-fact tools: attribution results that save and load, `probe_fact`, and their commands."""

import json

import pytest
import torch

import kneuron
from kneuron.attribution import AttributionResult
from kneuron.cli import main
from kneuron.errors import KneuronError
from kneuron.selection import baseline_neurons, coarse_neurons, refine


@pytest.fixture(scope="module")
def kn(tiny_world):
    return kneuron.load(str(tiny_world), device="cpu")


@pytest.fixture(scope="module")
def fact(tiny_world):
    from kneuron.world import load_world_facts

    facts = load_world_facts(tiny_world)
    return next(f for f in facts.facts if len(f.prompts) >= 4)


def test_top_and_coarse_match_a_brute_force_ranking(kn, fact):
    res = kn.attribute(fact.prompts[0], fact.object)
    ranked = sorted(((float(res.scores[j, i]), j, i) for j in range(kn.num_layers) for i in range(kn.num_neurons)),
                    reverse=True)
    top = res.top(7)
    assert [(n.layer, n.index) for n, _, _ in top] == [(j, i) for _, j, i in ranked[:7]]
    assert all(abs(s - r[0]) == 0 for (_, s, _), r in zip(top, ranked))
    assert all(a == float(res.activations[n.layer, n.index]) for n, _, a in top)
    assert res.coarse(0.2) == coarse_neurons(res.scores, 0.2)
    assert res.model == str(kn.name)
    with pytest.raises(KneuronError, match="top k"):
        res.top(0)


def test_result_saves_and_loads_exactly(kn, fact, tmp_path):
    res = kn.attribute(fact.prompts[1], fact.object, rule="riemann_right", steps=8)
    back = AttributionResult.load(res.save(tmp_path / "r.safetensors"))
    assert torch.equal(back.scores, res.scores) and torch.equal(back.activations, res.activations)
    assert back.convergence_delta is None and res.convergence_delta is None  # no zero point on the right sum
    assert (res.method, res.rule) == ("ig", "riemann_right")
    for name in ("prompt", "answer", "probability", "method", "steps", "target", "model", "rule"):
        assert getattr(back, name) == getattr(res, name), name
    left = kn.attribute(fact.prompts[1], fact.object)
    assert torch.equal(AttributionResult.load(left.save(tmp_path / "l.st")).convergence_delta, left.convergence_delta)


def test_loading_something_else_fails_in_one_line(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.bin").write_bytes(b"not safetensors at all")
    for path, message in ((tmp_path / "other.safetensors", "not a kneuron attribution file"),
                          (tmp_path / "junk.bin", "not a kneuron attribution file"),
                          (tmp_path / "missing", "not found")):
        with pytest.raises(KneuronError, match=message):
            AttributionResult.load(path)


def test_probe_fact_matches_the_pipeline_step_by_step(kn, fact):
    probe = kn.probe_fact(fact.prompts, fact.object, seed=3)
    results = [kn.attribute(p, fact.object) for p in fact.prompts]
    assert probe.neurons["kn"] == refine([coarse_neurons(r.scores, 0.2) for r in results], 0.7, 3)
    assert probe.neurons["baseline"] == refine([baseline_neurons(r.activations, 0.5) for r in results], 0.7, 3)
    assert len(probe.neurons["random"]) == len(probe.neurons["kn"])
    assert probe.neurons["random"] == kn.probe_fact(fact.prompts, fact.object, seed=3).neurons["random"]
    assert len(probe.effects) == 3 * len(fact.prompts)
    # Each effect equals the context-manager interventions, prompt by prompt.
    for method in ("kn", "baseline"):
        rows = probe.effects[probe.effects["method"] == method].reset_index(drop=True)
        for i, prompt in enumerate(fact.prompts):
            assert rows.loc[i, "p"] == pytest.approx(kn.probability(prompt, fact.object), rel=1e-5)
            with kn.suppress(probe.neurons[method]):
                assert rows.loc[i, "p_suppressed"] == pytest.approx(kn.probability(prompt, fact.object), rel=1e-5)
            with kn.amplify(probe.neurons[method], 2.0):
                assert rows.loc[i, "p_amplified"] == pytest.approx(kn.probability(prompt, fact.object), rel=1e-5)
    summary = probe.summary().set_index("method")
    kn_rows = probe.effects[probe.effects["method"] == "kn"]
    expect = (kn_rows["p_suppressed"].mean() - kn_rows["p"].mean()) / kn_rows["p"].mean()
    assert summary.loc["kn", "suppress_change"] == pytest.approx(expect)
    shared = probe.shared_by()
    assert all(shared[n] >= max(0.7 * len(fact.prompts), 3) for n in probe.neurons["kn"])


def test_probe_fact_needs_enough_prompts(kn, fact):
    with pytest.raises(KneuronError, match="at least 3 prompts"):
        kn.probe_fact(fact.prompts[:2], fact.object)
    assert kn.probe_fact(fact.prompts[:2], fact.object, min_prompts=1).settings["min_prompts"] == 1


def test_cli_predict_attribute_and_neurons(tiny_world, kn, fact, tmp_path, capsys):
    model = str(tiny_world)
    assert main(["predict", fact.prompts[0], "-m", model, "-k", "3", "-a", fact.object]) == 0
    out = capsys.readouterr().out
    assert kn.predict(fact.prompts[0], k=1)[0][0] in out
    assert f"= {kn.probability(fact.prompts[0], fact.object):.4f}" in out

    saved, png = tmp_path / "a.safetensors", tmp_path / "a.png"
    assert main(["attribute", fact.prompts[0], fact.object, "-m", model, "--top", "4", "--save", str(saved),
                 "--figure", str(png)]) == 0
    out = capsys.readouterr().out
    res = AttributionResult.load(saved)
    assert torch.allclose(res.scores, kn.attribute(fact.prompts[0], fact.object).scores, rtol=1e-5, atol=1e-8)
    for n, _, _ in res.top(4):
        assert str(n) in out
    assert f"coarse set (score >= 0.2 x max): {len(res.coarse())} neurons" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["attribute", "--load", str(saved), "--top", "2", "-m", "no-such-model"]) == 0  # no model needed
    assert str(res.top(1)[0][0]) in capsys.readouterr().out

    report = tmp_path / "n.json"
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(fact.prompts) + "\n\n", encoding="utf-8")
    assert main(["neurons", fact.object, "--prompts-file", str(prompts_file), "-m", model, "--json", str(report),
                 "--seed", "5"]) == 0
    data = json.loads(report.read_text())
    probe = kn.probe_fact(fact.prompts, fact.object, seed=5)
    assert data["neurons"]["kn"] == [[n.layer, n.index] for n in probe.neurons["kn"]]
    assert data["settings"]["seed"] == 5 and data["prompts"] == fact.prompts
    assert f"{len(probe.neurons['kn'])} knowledge neurons" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["attribute", "only a prompt [MASK]"], "give PROMPT and ANSWER"),
    (["attribute", "p [MASK]", "a", "--load", "x.safetensors"], "not both"),
    (["attribute", "p [MASK]", "a", "--layers", "1,x"], "--layers must be"),
    (["neurons", "Paris"], "no prompts"),
    (["neurons", "Paris", "a [MASK]", "--prompts-file", "f.txt"], "not both"),
    (["predict", "a [MASK]", "-k", "0"], "-k must be"),
])
def test_cli_bad_input_is_one_line(args, message, tiny_world, capsys):
    args = [*args, "-m", str(tiny_world)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_probe_fact_on_a_causal_lm_with_a_multi_token_answer(tmp_path):
    from tiny_decoders import save_tiny_decoder

    kn = kneuron.load(str(save_tiny_decoder("gpt2", tmp_path / "gpt2")), device="cpu")
    prompts = ["The capital of France is [MASK]", "France has its capital in [MASK]", "the city of [MASK]"]
    assert len(kn.answer_ids("Paris Texas")) > 1
    probe = kn.probe_fact(prompts, "Paris Texas", min_prompts=2, p=0.5)
    results = kn.attribute(prompts, "Paris Texas")
    assert probe.neurons["kn"] == refine([coarse_neurons(r.scores, 0.2) for r in results], 0.5, 2)
    rows = probe.effects[probe.effects["method"] == "kn"].reset_index(drop=True)
    for i, prompt in enumerate(prompts):  # the product of the answer tokens' probabilities, as attributed
        assert rows.loc[i, "p"] == pytest.approx(kn.probability(prompt, "Paris Texas"), rel=1e-5)
        with kn.suppress(probe.neurons["kn"]):
            assert rows.loc[i, "p_suppressed"] == pytest.approx(kn.probability(prompt, "Paris Texas"), rel=1e-5)


def test_cli_multi_token_answers_on_a_masked_lm(tmp_path, capsys):
    from tiny_models import save_tiny_bert

    model = str(save_tiny_bert(tmp_path / "bert", layers=2, hidden=32, intermediate=48))
    prompt = "The capital of France is [MASK]."
    assert main(["attribute", prompt, "Paris Texas", "-m", model]) == 2
    assert "several tokens" in capsys.readouterr().err
    saved = tmp_path / "pt.safetensors"
    assert main(["attribute", prompt, "Paris Texas", "-m", model, "--multi-token", "--save", str(saved)]) == 0
    kn = kneuron.load(model, device="cpu", multi_token=True)
    assert torch.allclose(AttributionResult.load(saved).scores, kn.attribute(prompt, "Paris Texas").scores,
                          rtol=1e-5, atol=1e-9)

"""The registry of localization methods (`kneuron.localization`): every method scores every neuron,
`kn.attribute(method=...)` and `compare` read the same registry, a new method appears everywhere
(methods, compare, the CLI's help) once registered, and the integration rule is `rule=`, not `method=`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kneuron.attribution import INTEGRATION_RULES, AttributionResult, IntegratedGradients
from kneuron.cli import main
from kneuron.compare import CompareConfig, check_methods, compare
from kneuron.data import load_facts_jsonl
from kneuron.errors import KneuronError
from kneuron.localization import LocalizationMethod, get_method, method_names, register, unregister
from kneuron.neurons import Neuron

MASKED = ("The capital of France is [MASK].", "Paris", "France")
CAUSAL = ("The capital of France is", "Paris", "France")


@pytest.fixture(params=["bert", "llama"])
def model_and_fact(request):
    return request.getfixturevalue(request.param), MASKED if request.param == "bert" else CAUSAL


def test_the_built_ins_keep_compares_published_order():
    # The default --methods (and so a resumed comparison's config.json) depend on this order.
    assert method_names()[:6] == ["ig", "activation", "grad_x_act", "ig_1step", "atp", "random"]
    assert CompareConfig().methods == method_names()
    for name in method_names():
        method = get_method(name)
        assert method.name == name and method.summary() and "\n" not in method.summary()
    assert [n for n in method_names() if get_method(n).needs_subject] == ["atp"]


@pytest.mark.filterwarnings("ignore:answer .* is tokenized")  # the tiny BPE spells some answers apart
def test_every_method_scores_every_neuron(model_and_fact):
    kn, (prompt, answer, subject) = model_and_fact
    for name in method_names():
        scores = get_method(name).attribute(kn, prompt, answer, subject=subject, seed=3)
        assert scores.shape == (kn.num_layers, kn.num_neurons), name
        assert scores.dtype == torch.float32 and scores.device.type == "cpu", name
        assert torch.isfinite(scores).all() and not scores.requires_grad, name
        again = get_method(name).attribute(kn, prompt, answer, subject=subject, seed=3)
        assert torch.equal(scores, again), name  # seeded: the same call gives the same scores


@pytest.mark.filterwarnings("ignore:answer .* is tokenized")
def test_kn_attribute_gives_the_registrys_scores(model_and_fact):
    kn, (prompt, answer, subject) = model_and_fact
    for name in method_names():
        res = kn.attribute(prompt, answer, method=name, subject=subject, seed=3)
        assert isinstance(res, AttributionResult) and res.method == name
        want = get_method(name).attribute(kn, prompt, answer, subject=subject, seed=3)
        assert torch.equal(res.scores.float().cpu(), want), name
        assert torch.allclose(res.activations.cpu(), kn.activations(prompt, answer).cpu(), atol=1e-6), name
        assert res.probability == pytest.approx(kn.probability(prompt, answer), rel=1e-4), name
        if name in ("ig", "ig_1step"):
            assert (res.steps, res.rule) == (20 if name == "ig" else 1, "riemann_left")
        else:
            assert (res.steps, res.rule, res.convergence_delta) == (0, "", None)
    several = kn.attribute([prompt, prompt], answer, method="grad_x_act")
    assert len(several) == 2 and torch.equal(several[0].scores, several[1].scores)
    part = kn.attribute(prompt, answer, method="activation", layers=[0])
    assert (part.scores[1:] == 0).all() and torch.equal(part.scores[0], kn.activations(prompt, answer)[0].cpu())


def test_ig_through_the_registry_is_the_engine_bit_for_bit(bert):
    prompt, answer, _ = MASKED
    for name, steps in (("ig", 20), ("ig_1step", 1)):
        engine = IntegratedGradients(bert, steps=steps).attribute(prompt, answer)[0].scores.float().cpu()
        assert torch.equal(get_method(name).attribute(bert, prompt, answer), engine), name
    assert torch.equal(bert.attribute(prompt, answer).scores, bert.attribute(prompt, answer, method="ig").scores)


def test_unknown_methods_and_old_rule_calls_are_one_line(bert):
    prompt, answer, _ = MASKED
    with pytest.raises(KneuronError, match="unknown method 'lasso'; use one of: ig, ") as info:
        get_method("lasso")
    assert "\n" not in str(info.value) and all(n in str(info.value) for n in method_names())
    with pytest.raises(KneuronError, match="unknown method 'lasso'"):
        bert.attribute(prompt, answer, method="lasso")
    for rule in INTEGRATION_RULES:  # the integration rule used to be method=
        with pytest.raises(KneuronError, match=f"pass rule='{rule}'"):
            bert.attribute(prompt, answer, method=rule)
    with pytest.raises(KneuronError, match="steps=5: options of method 'ig' only"):
        bert.attribute(prompt, answer, method="activation", steps=5)
    with pytest.raises(KneuronError, match="rule='riemann_right'"):
        bert.attribute(prompt, answer, method="ig_1step", rule="riemann_right")
    assert bert.attribute(prompt, answer, rule="riemann_right", steps=2).rule == "riemann_right"


@pytest.mark.parametrize("seed", [0, 7])
def test_random_draws_as_compare_always_did(seed):
    layers, neurons, k = 3, 11, 8
    flat = np.random.default_rng(seed).choice(layers * neurons, size=k, replace=False)
    assert get_method("random").draw(layers, neurons, k, seed) == [Neuron(int(i) // neurons, int(i) % neurons)
                                                                   for i in flat]
    assert len(get_method("random").draw(2, 3, 50, seed)) == 6  # k beyond the neurons: all of them


def test_random_scores_are_seeded_and_blind_to_the_prompt(bert):
    rnd = get_method("random")
    a = rnd.attribute(bert, *MASKED[:2], seed=1)
    assert torch.equal(a, rnd.attribute(bert, "[MASK] is the capital of Italy .", "Rome", seed=1))
    assert not torch.equal(a, rnd.attribute(bert, *MASKED[:2], seed=2))


def test_derived_rows_stand_for_ig(setup, tmp_path, capsys):
    assert check_methods(["ig_refined"]) == ["ig"]
    assert check_methods(["ig_specific", "activation", "ig", "ig_refined"]) == ["ig", "activation"]
    with pytest.raises(KneuronError, match="unknown method 'lasso'.*rows derived from ig"):
        check_methods(["ig", "lasso"])
    # On the command line: --methods ig_refined passes, and the next check (--budgets) is the one that fails.
    _, model_dir, path = setup
    argv = ["compare", "--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv + ["--methods", "ig_refined", "--budgets", "0"]) != 0
    err = capsys.readouterr().err
    assert "budgets must be >= 1" in err and "method" not in err


@pytest.fixture
def toy():
    """A method registered for one test, then forgotten."""

    @register
    class Toy(LocalizationMethod):
        """The activation's square: a toy method registered by a test."""

        name = "toy_square"

        def attribute(self, kn, prompt, answer, *, subject="", seed=0):
            return kn.activations(prompt, answer).float().cpu() ** 2

    try:
        yield Toy
    finally:
        unregister("toy_square")
    assert "toy_square" not in method_names()


def _help(*args) -> str:
    from typer.testing import CliRunner

    import kneuron.cli as cli

    cli._register()
    result = CliRunner().invoke(cli.app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_a_registered_method_appears_everywhere(toy, bert, setup, tmp_path):
    assert method_names()[-1] == "toy_square" and get_method("toy_square").summary().startswith("The activation's")
    assert check_methods(["toy_square", "random"]) == ["toy_square", "random"]
    help_text = _help("compare")
    assert all(name in help_text for name in method_names()) and "ig_refined" in help_text
    prompt, answer, _ = MASKED
    assert torch.equal(bert.attribute(prompt, answer, method="toy_square").scores,
                       bert.activations(prompt, answer).float().cpu() ** 2)
    with pytest.raises(KneuronError, match="already registered"):
        register(type("Other", (LocalizationMethod,), {"name": "toy_square", "__doc__": "Another."}))
    # compare ranks by it like any built-in: its top neuron is the fact's largest mean squared activation.
    _, model_dir, path = setup
    facts = load_facts_jsonl(path)
    res = compare(bert, facts, tmp_path / "cmp", CompareConfig(
        model=str(model_dir), data=str(path), relations=["capital"], limit_facts=2, methods=["toy_square", "random"],
        budgets=[1], other_prompts=2, heldout=0))
    assert list(res.methods["method"]) == ["toy_square", "random"]
    records = [json.loads(line) for line in (tmp_path / "cmp" / "scores.jsonl").read_text().splitlines()]
    for rec in records:
        fact = facts.facts[rec["fact"]]
        mean = torch.stack([bert.activations(fact.prompts[k], fact.object).float() ** 2 for k in rec["prompts"]]).mean(0)
        best = int(torch.argmax(mean.flatten()))
        assert rec["top"]["toy_square"][0] == [best // bert.num_neurons, best % bert.num_neurons]


def test_the_rule_options_list_every_integration_rule():
    for command in ("attribute", "neurons", "discover"):
        text = _help(command)
        assert "--rule" in text and "--method " not in text, command
        assert all(rule in text for rule in INTEGRATION_RULES), command


def test_old_files_that_named_the_rule_method_still_load(bert, tmp_path):
    from kneuron.runs import DiscoveryConfig, RunDir
    from kneuron.tagged_files import save_tagged

    # A run directory written before the rename: its config.json says "method"; it loads and resumes.
    old = DiscoveryConfig(rule="gauss_legendre").to_json()
    old["method"] = old.pop("rule")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(old), encoding="utf-8")
    assert RunDir(tmp_path / "run").config().rule == "gauss_legendre"
    RunDir(tmp_path / "run").check_resumable(DiscoveryConfig(rule="gauss_legendre"))
    with pytest.raises(KneuronError, match="rule='gauss_legendre', not 'riemann_left'"):
        RunDir(tmp_path / "run").check_resumable(DiscoveryConfig())
    # A saved attribution of then: "method" held the rule.
    res = bert.attribute(*MASKED[:2], rule="riemann_right", steps=2)
    meta = {"prompt": res.prompt, "answer": res.answer, "probability": res.probability, "method": "riemann_right",
            "steps": 2, "target": "product", "model": res.model}
    path = save_tagged(tmp_path / "old.safetensors", {"scores": res.scores, "activations": res.activations},
                       "kneuron_attribution", "kneuron-attribution", 1, meta)
    back = AttributionResult.load(path)
    assert (back.method, back.rule, back.steps) == ("ig", "riemann_right", 2)
    assert torch.equal(back.scores, res.scores)

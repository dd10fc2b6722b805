"""`kneuron compare`: hand-computed scores, random controls near zero, resumption, the output schema,
reuse of a discovery run, and one-line errors for bad input."""

import json

import pandas as pd
import pytest
import torch
from tiny_facts import build_discovery_setup

import kneuron
from kneuron.cli import main
from kneuron.compare import COLUMNS, CompareConfig, compare
from kneuron.compare import engine as engine_module
from kneuron.compare.scores import NOISE_SCALE, prompt_scores, subject_positions
from kneuron.data import load_facts, load_facts_jsonl
from kneuron.models.replay import as_3d
from kneuron.runs import DiscoveryConfig, RunDir, discover


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_discovery_setup(tmp_path_factory.mktemp("compare"))


@pytest.fixture(scope="module")
def tiny(setup):
    return kneuron.load(str(setup[1]), device="cpu")


def _blank_acts(kn, ids, blank, embeds_noise=None):
    """Activations at the blank, read plainly (optionally with noise added to the word embeddings)."""
    seen = {}
    handles = [kn.adapter.down_projection(kn.model, layer).register_forward_pre_hook(
        lambda m, a, layer=layer: seen.__setitem__(layer, as_3d(a[0], 1)[0, blank].mean(0).clone()))
        for layer in range(kn.num_layers)]
    try:
        with torch.no_grad():
            if embeds_noise is None:
                kn.model(input_ids=ids)
            else:
                emb = kn.model.get_input_embeddings()(ids) + embeds_noise
                kn.model(inputs_embeds=emb)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([seen[n] for n in range(kn.num_layers)])


def _prob_with(kn, enc, layer, index, delta):
    """P(gold) with one neuron's activation at the blank shifted by delta (a finite-difference probe)."""
    site = kn.adapter.down_projection(kn.model, layer)

    def hook(module, args):
        x = as_3d(args[0], 1).clone()
        x[0, list(enc.blank), index] += delta
        return (x,) + tuple(args[1:])

    h = site.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            logits = kn.model(input_ids=torch.tensor([enc.ids])).logits[0, enc.targets[0]]
    finally:
        h.remove()
    return float(torch.softmax(logits.double(), -1)[enc.target_ids[0]])


def test_grad_x_act_and_atp_match_a_computation_by_hand(tiny):
    kn = tiny
    prompt, answer, subject = "The capital of France is [MASK].", "Paris", "France"
    enc = kn.encode(prompt, answer)
    ids = torch.tensor([enc.ids])
    acts = _blank_acts(kn, ids, list(enc.blank))
    gxa = prompt_scores(kn, "grad_x_act", prompt, answer)
    atp = prompt_scores(kn, "atp", prompt, answer, subject, seed=7)
    # The noise, drawn by hand: same generator, the subject's tokens, 3 x the embeddings' std.
    pos = subject_positions(kn, prompt, subject)
    assert kn.tokenizer.decode([enc.ids[p] for p in pos]).strip() == "France"
    std = float(kn.model.get_input_embeddings().weight.std())
    noise = torch.zeros(1, len(enc.ids), kn.model.config.hidden_size)
    noise[0, pos] = torch.randn(len(pos), noise.shape[-1], generator=torch.Generator().manual_seed(7)) * NOISE_SCALE * std
    corrupt = _blank_acts(kn, ids, list(enc.blank), noise)
    assert not torch.allclose(corrupt, acts)
    # Gradients by central differences, for the strongest neurons of each score.
    eps = 1e-3
    checked = set()
    for score in (gxa, atp):
        checked |= {divmod(int(i), kn.num_neurons) for i in score.abs().flatten().topk(6).indices}
    for layer, index in checked:
        grad = (_prob_with(kn, enc, layer, index, eps) - _prob_with(kn, enc, layer, index, -eps)) / (2 * eps)
        assert gxa[layer, index] == pytest.approx(float(acts[layer, index]) * grad, rel=2e-2, abs=1e-7)
        want = (float(acts[layer, index]) - float(corrupt[layer, index])) * grad
        assert atp[layer, index] == pytest.approx(want, rel=2e-2, abs=1e-7)


def _run(setup, out, **kw):
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    cfg = CompareConfig(model=str(model_dir), data=str(path), budgets=[1, 2, 4], other_prompts=4, **kw)
    return compare(kn, load_facts_jsonl(path), out, cfg)


def test_methods_csv_schema_and_outputs(setup, tmp_path):
    res = _run(setup, tmp_path / "out")
    methods = pd.read_csv(tmp_path / "out" / "methods.csv")
    assert list(methods.columns) == COLUMNS
    assert methods["budget"].dtype.kind == "i"
    rows = list(zip(methods["method"], methods["budget"]))
    expect = [(m, k) for m in ("ig", "activation", "grad_x_act", "ig_1step", "atp", "random") for k in (1, 2, 4)]
    assert rows == expect + [("ig_refined", 0), ("ig_specific", 0)]
    top = methods[methods.budget > 0]
    assert (top["neurons_per_fact"] == top["budget"]).all()
    assert methods["suppress"].notna().all() and methods["other_relations_suppress"].notna().all()
    neurons = pd.read_csv(tmp_path / "out" / "neurons.csv")
    assert list(neurons.columns) == ["method", "budget", "relation", "subject", "layer", "index"]
    per = neurons[(neurons.method == "ig") & (neurons.budget == 2)].groupby("subject").size()
    assert (per == 2).all()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["seed"] == 0 and config["budgets"] == [1, 2, 4] and config["other_prompts"] == 4
    assert (tmp_path / "out" / "deletion_curve.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="compare"' in html and 'id="figure-deletion_curve"' in html
    assert res.methods.drop(columns="seconds_per_prompt").equals(methods.drop(columns="seconds_per_prompt"))


def _tables(out):
    return (pd.read_csv(out / "methods.csv"), pd.read_csv(out / "neurons.csv"))


def test_resume_after_interruption_is_identical(setup, tmp_path, monkeypatch):
    _run(setup, tmp_path / "full", methods=["ig", "atp", "random"])
    real_score, real_measure = engine_module.score_fact, engine_module.measure_row
    calls = {"score": 0, "measure": 0}

    def score_then_stop(*a, **kw):
        calls["score"] += 1
        if calls["score"] == 4:
            raise KeyboardInterrupt
        return real_score(*a, **kw)

    def measure_then_stop(*a, **kw):
        calls["measure"] += 1
        if calls["measure"] == 3:
            raise KeyboardInterrupt
        return real_measure(*a, **kw)

    monkeypatch.setattr(engine_module, "score_fact", score_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(setup, tmp_path / "resumed", methods=["ig", "atp", "random"])
    assert len((tmp_path / "resumed" / "scores.jsonl").read_text().splitlines()) == 3
    monkeypatch.setattr(engine_module, "score_fact", real_score)
    monkeypatch.setattr(engine_module, "measure_row", measure_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(setup, tmp_path / "resumed", methods=["ig", "atp", "random"])
    assert len((tmp_path / "resumed" / "effects.jsonl").read_text().splitlines()) == 2
    with open(tmp_path / "resumed" / "effects.jsonl", "a") as fh:
        fh.write('{"row": "ig@4", "suppr')  # a line cut short by kill -9
    monkeypatch.setattr(engine_module, "measure_row", real_measure)
    res = _run(setup, tmp_path / "resumed", methods=["ig", "atp", "random"])
    assert res.resumed_facts == 10
    full, resumed = _tables(tmp_path / "full"), _tables(tmp_path / "resumed")
    drop = ["seconds_per_prompt"]  # timings are journaled, but measured in different sessions
    assert full[0].drop(columns=drop).equals(resumed[0].drop(columns=drop))
    assert full[1].equals(resumed[1])
    with pytest.raises(kneuron.KneuronError, match="seed=0, not 1"):
        _run(setup, tmp_path / "resumed", methods=["ig", "atp", "random"], seed=1)


def test_random_neurons_move_nothing_at_any_budget(tiny_world, tmp_path):
    kn = kneuron.load(str(tiny_world), device="cpu")
    cfg = CompareConfig(model=str(tiny_world), data=str(tiny_world), methods=["ig", "random"], budgets=[1, 2, 4, 8],
                        limit_facts=3, other_prompts=6)
    methods = compare(kn, load_facts(str(tiny_world)), tmp_path / "out", cfg).methods.set_index(["method", "budget"])
    for k in (1, 2, 4, 8):
        row = methods.loc[("random", k)]
        for col in ("suppress", "amplify", "other_relations_suppress"):
            assert abs(row[col]) < 5.0, (k, col, row[col])
    # The draw is what it claims: distinct neurons, from every layer, different for different facts.
    neurons = pd.read_csv(tmp_path / "out" / "neurons.csv")
    rnd = neurons[(neurons.method == "random") & (neurons.budget == 8)]
    per_fact = rnd.groupby(["relation", "subject"]).apply(lambda g: frozenset(zip(g.layer, g["index"])), include_groups=False)
    assert (per_fact.map(len) == 8).all() and per_fact.nunique() == len(per_fact)
    assert set(rnd.layer) == set(range(kn.num_layers))


def test_run_reuses_the_stored_ig(setup, tmp_path, monkeypatch):
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    discover(kn, load_facts_jsonl(path), tmp_path / "run", DiscoveryConfig(model=str(model_dir), data=str(path)),
             progress=False)
    monkeypatch.setattr(type(kn), "attribute", lambda *a, **k: pytest.fail("IG recomputed despite --run"))
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(model_dir), "--out", str(out), "--run", str(tmp_path / "run"),
                 "--methods", "ig,random", "--budgets", "1,2", "--no-progress"]) == 0
    neurons = pd.read_csv(out / "neurons.csv")
    table = RunDir(tmp_path / "run").neurons()
    kn_sets = table[table.method == "kn"]
    got = neurons[neurons.method == "ig_refined"]
    assert list(zip(got.subject, got.layer, got["index"])) == list(zip(kn_sets.subject, kn_sets.layer, kn_sets["index"]))
    # ig at budget 1: the neuron with the highest mean stored coarse score (0 where a prompt did not keep it).
    records = RunDir(tmp_path / "run").records()
    rec = next(r for r in records.values() if "skipped" not in r)
    totals = {}
    for prompt in rec["kn"]:
        for layer, index, score in prompt:
            totals[(layer, index)] = totals.get((layer, index), 0.0) + score
    best = max(totals, key=lambda n: (totals[n], -n[0], -n[1]))
    row = neurons[(neurons.method == "ig") & (neurons.budget == 1) & (neurons.subject == rec["subject"])]
    assert (int(row.layer.iloc[0]), int(row["index"].iloc[0])) == best
    methods = pd.read_csv(out / "methods.csv")
    assert methods[methods.method == "ig"]["seconds_per_prompt"].isna().all()
    assert json.loads((out / "config.json").read_text())["run"] == str(tmp_path / "run")


@pytest.mark.parametrize("args, message", [
    (["--methods", "ig,lasso"], "unknown method 'lasso'"),
    (["--budgets", "0,2"], "budgets must be >= 1, got 0"),
    (["--budgets", "-3"], "budgets must be >= 1, got -3"),
    (["--budgets", "1,2.5"], "budgets must be integers, got '2.5'"),
    (["--limit-facts", "0"], "--limit-facts must be >= 1, got 0"),
    (["--run", "RUN", "--model", "other-model"], "was made with the model"),
])
def test_bad_input_is_one_line(setup, tmp_path, capsys, args, message):
    _, model_dir, path = setup
    run = tmp_path / "run"
    RunDir(run).write_config(DiscoveryConfig(model=str(model_dir), data=str(path)))
    argv = ["compare", "--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "o"), "--no-progress"]
    argv += [str(run) if a == "RUN" else a for a in args]
    if "--run" in args:
        argv.remove("--data"), argv.remove(str(path))
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_atp_noise_follows_the_embedding_layers_output(tmp_path):
    """Gemma scales its embedding table inside the layer: the noise must be 3x the std of what the
    layer outputs, not of the table (which would be sqrt(hidden) times too weak)."""
    from tiny_decoders import save_tiny_decoder

    from kneuron.compare.scores import embedding_std

    gemma = kneuron.load(str(save_tiny_decoder("gemma3_text", tmp_path / "g")), device="cpu")
    emb = gemma.model.get_input_embeddings()
    table = float(emb.weight.double().std())
    assert embedding_std(emb) == pytest.approx(table * gemma.model.config.hidden_size ** 0.5, rel=1e-3)
    plain = torch.nn.Embedding(50, 8)
    assert embedding_std(plain, rows=7) == pytest.approx(float(plain.weight.double().std()), rel=1e-9)

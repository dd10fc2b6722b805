"""`kneuron compare`: hand-computed scores, random controls near zero, resumption, the output schema,
reuse of a discovery run, and one-line errors for bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import kneuron
from kneuron.cli import main
from kneuron.compare import COLUMNS, CompareConfig, compare
from kneuron.compare import engine as engine_module
from kneuron.compare.engine import prompt_scores
from kneuron.data import load_facts, load_facts_jsonl
from kneuron.localization import NOISE_SCALE, subject_positions
from kneuron.models.replay import as_3d
from kneuron.runs import DiscoveryConfig, RunDir, discover


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


def test_grad_x_act_and_atp_match_a_computation_by_hand(bert):
    kn = bert
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


def _row_by_hand(kn, facts, neurons, method, budget, factor, records=None):
    """A row's suppress (factor 0) or amplify (factor 2), recomputed through kn.suppress / kn.amplify:
    per relation (mean p_new - mean p_orig) / mean p_orig over its facts' usable prompts (with
    `records`, scores.jsonl's: each fact's selection prompts), in percent, then the unweighted mean
    over relations."""
    sets = neurons[(neurons.method == method) & (neurons.budget == budget)]
    per_rel: dict[str, list[tuple[float, float]]] = {}
    for n, f in enumerate(facts.facts):
        prompts = [p for p in f.prompts if kn.is_masked or kn.ends_at_blank(p)]
        if records is not None:
            prompts = [f.prompts[k] for k in records[n].get("prompts", ())]
        try:
            for p in prompts:
                kn.encode(p, f.object)
        except kneuron.KneuronError:
            continue  # compare skips the fact
        mine = sets[(sets.relation == f.relation) & (sets.subject == f.subject)]
        chosen = [(int(a), int(b)) for a, b in zip(mine.layer, mine["index"])]
        before = kn.probabilities(prompts, f.object).double()
        with kn.suppress(chosen) if factor == 0 else kn.amplify(chosen, factor):
            after = kn.probabilities(prompts, f.object).double()
        per_rel.setdefault(f.relation, []).extend(zip(before.tolist(), after.tolist()))
    changes = [(np.mean([a for _, a in v]) - np.mean([b for b, _ in v])) / np.mean([b for b, _ in v])
               for v in per_rel.values()]
    return 100.0 * float(np.mean(changes))


def test_methods_csv_schema_and_outputs(setup, bert, tmp_path):
    res = _run(setup, tmp_path / "out")
    methods = pd.read_csv(tmp_path / "out" / "methods.csv")
    assert list(methods.columns) == COLUMNS
    assert methods["budget"].dtype.kind == "i"
    rows = list(zip(methods["method"], methods["budget"]))
    expect = [(m, k) for m in ("ig", "activation", "grad_x_act", "ig_1step", "atp", "random") for k in (1, 2, 4)]
    assert rows == expect + [("ig_refined", 0), ("ig_specific", 0)]
    top = methods[methods.budget > 0]
    assert (top["neurons_per_fact"] == top["budget"]).all()
    # "Paris Texas" is skipped; of each fact's 5 prompts 3 choose (in-sample) and 2 are held out.
    assert (methods["facts"] == 9).all() and (methods["prompts"] == 27).all() and (methods["heldout_prompts"] == 18).all()
    assert (methods["split"] == "all").all() and methods[["suppress_heldout", "amplify_heldout"]].notna().all().all()
    assert methods["other_relations_suppress"].notna().all()
    # IG's neurons lower their facts, far more than random ones (measured: -27/-43/-63% against 0/+1/-3%).
    by = methods.set_index(["method", "budget"])
    for k in (1, 2, 4):
        assert by.loc[("ig", k), "suppress"] < -15 and by.loc[("ig", k), "suppress"] < by.loc[("random", k), "suppress"] - 15
        assert by.loc[("ig", k), "amplify"] > 15 > abs(by.loc[("random", k), "amplify"])
    assert by.loc[("ig", 4), "suppress"] < by.loc[("ig", 1), "suppress"]
    assert by.loc[("ig_refined", 0), "suppress"] < by.loc[("random", 4), "suppress"] - 15
    neurons = pd.read_csv(tmp_path / "out" / "neurons.csv")
    # The numbers themselves, recomputed independently through kn.suppress / kn.amplify.
    facts = load_facts_jsonl(setup[2])
    records = {r["fact"]: r for r in map(json.loads, (tmp_path / "out" / "scores.jsonl").read_text().splitlines())}
    for method, budget in (("ig", 2), ("random", 2), ("ig_refined", 0)):
        for col, factor in (("suppress", 0.0), ("amplify", 2.0)):
            want = _row_by_hand(bert, facts, neurons, method, budget, factor, records)
            assert by.loc[(method, budget), col] == pytest.approx(want, rel=1e-4, abs=1e-4), (method, col)
    assert list(neurons.columns) == ["method", "budget", "relation", "subject", "layer", "index"]
    per = neurons[(neurons.method == "ig") & (neurons.budget == 2)].groupby("subject").size()
    assert (per == 2).all()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["seed"] == 0 and config["budgets"] == [1, 2, 4] and config["other_prompts"] == 4
    assert config["heldout"] == 2 and config["tune_share"] == 0.0
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
    from kneuron.attribution import IntegratedGradients

    for owner in (type(kn), IntegratedGradients):
        monkeypatch.setattr(owner, "attribute", lambda *a, **k: pytest.fail("IG recomputed despite --run"))
    # The run saw every prompt (no --holdout): compare holds 2 of each fact's 5 out of the stored IG and
    # refines the other 3 prompts' coarse sets again; with --heldout 0 the refined sets are the run's.
    out, whole = tmp_path / "cmp", tmp_path / "whole"
    for where, extra in ((out, []), (whole, ["--heldout", "0"])):
        assert main(["compare", "--model", str(model_dir), "--out", str(where), "--run", str(tmp_path / "run"),
                     "--methods", "ig,random", "--budgets", "1,2", "--no-progress", *extra]) == 0
    table = RunDir(tmp_path / "run").neurons()
    kn_sets = table[table.method == "kn"]
    got = pd.read_csv(whole / "neurons.csv")
    got = got[got.method == "ig_refined"]
    assert list(zip(got.subject, got.layer, got["index"])) == list(zip(kn_sets.subject, kn_sets.layer, kn_sets["index"]))
    assert json.loads((whole / "selection.json").read_text())["specific"]["refined_from"] == "run"
    assert pd.read_csv(whole / "methods.csv")["suppress_heldout"].isna().all()
    assert json.loads((out / "selection.json").read_text())["specific"]["refined_from"] == "selection prompts"
    # ig at budget 1: the neuron with the highest mean stored coarse score over the selection prompts
    # (0 where a prompt did not keep it); the held-out prompts' scores do not count.
    neurons = pd.read_csv(out / "neurons.csv")
    scored = {r["fact"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    records = RunDir(tmp_path / "run").records()
    differs = 0
    for i, rec in records.items():
        if "skipped" in rec:
            continue
        assert len(scored[i]["prompts"]) == 3 and len(scored[i]["heldout"]) == 2
        totals, everywhere = {}, {}
        for k, prompt in enumerate(rec["kn"]):
            for layer, index, score in prompt:
                everywhere[(layer, index)] = everywhere.get((layer, index), 0.0) + score
                if k in scored[i]["prompts"]:
                    totals[(layer, index)] = totals.get((layer, index), 0.0) + score
        best = max(totals, key=lambda n: (totals[n], -n[0], -n[1]))
        differs += best != max(everywhere, key=lambda n: (everywhere[n], -n[0], -n[1]))
        row = neurons[(neurons.method == "ig") & (neurons.budget == 1) & (neurons.subject == rec["subject"])]
        assert (int(row.layer.iloc[0]), int(row["index"].iloc[0])) == best
    assert differs  # the check can tell the two apart
    methods = pd.read_csv(out / "methods.csv")
    assert methods[methods.method == "ig"]["seconds_per_prompt"].isna().all()
    assert methods["suppress_heldout"].notna().all()
    assert json.loads((out / "config.json").read_text())["run"] == str(tmp_path / "run")


@pytest.mark.parametrize("args, message", [
    (["--methods", "ig,lasso"], "unknown method 'lasso'"),
    (["--budgets", "0,2"], "budgets must be >= 1, got 0"),
    (["--budgets", "-3"], "budgets must be >= 1, got -3"),
    (["--budgets", "1,2.5"], "budgets must be integers, got '2.5'"),
    (["--limit-facts", "0"], "--limit-facts must be an integer >= 1, got 0"),
    (["--run", "RUN", "--model", "other-model"], "was made with the model"),
    (["--heldout", "-1"], "--heldout must be an integer >= 0, got -1"),
    (["--tune-share", "1"], "--tune-share must be in [0, 1), got 1.0"),
    (["--tune-share", "0.5", "--specific-fractions", "0.1,x"], "--specific-fractions must be numbers, got 'x'"),
    (["--tune-share", "0.5", "--specific-fractions", "0.1,-2"], "fraction must be >= 0, got -2"),
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

    from kneuron.localization import embedding_std

    gemma = kneuron.load(str(save_tiny_decoder("gemma3_text", tmp_path / "g")), device="cpu")
    emb = gemma.model.get_input_embeddings()
    table = float(emb.weight.double().std())
    assert embedding_std(emb) == pytest.approx(table * gemma.model.config.hidden_size ** 0.5, rel=1e-3)
    plain = torch.nn.Embedding(50, 8)
    assert embedding_std(plain, rows=7) == pytest.approx(float(plain.weight.double().std()), rel=1e-9)


def test_atp_finds_its_subject_in_any_case_and_a_bad_fact_skips_alone(setup, bert, tmp_path, monkeypatch):
    """A subject spelled in another letter case is found; one absent from the prompts, or any other
    scoring error, skips its fact (recorded in selection.json) and the comparison goes on."""
    _, model_dir, path = setup
    prompt = "The capital of Ireland is [MASK]."
    pos = subject_positions(bert, prompt, "Ireland")
    assert subject_positions(bert, prompt, "ireland") == subject_positions(bert, prompt, "IRELAND") == pos
    assert torch.equal(prompt_scores(bert, "atp", prompt, "Dublin", "ireland", seed=3),
                       prompt_scores(bert, "atp", prompt, "Dublin", "Ireland", seed=3))
    facts = load_facts_jsonl(path)
    assert [f.subject for f in facts.facts[:3]] == ["Ireland", "France", "Italy"]
    facts.facts[0].subject = "ireland"  # another case than in its prompts: found all the same
    facts.facts[1].subject = "Gaul"  # in none of its prompts
    real = engine_module.prompt_scores

    def fail_on_italy(kn, method, prompt, answer, subject="", seed=0):
        if subject == "Italy" and method == "atp":
            raise kneuron.KneuronError("no noise today")
        return real(kn, method, prompt, answer, subject, seed)

    monkeypatch.setattr(engine_module, "prompt_scores", fail_on_italy)
    cfg = CompareConfig(model=str(model_dir), data=str(path), methods=["grad_x_act", "atp", "random"], budgets=[1, 2],
                        other_prompts=4)
    res = compare(bert, facts, tmp_path / "out", cfg)
    skipped = json.loads((tmp_path / "out" / "selection.json").read_text())["skipped"]
    assert sorted(skipped) == ["1", "2", "9"]  # Gaul, Italy, and "Paris Texas" (not one token)
    assert "subject 'Gaul' does not occur in the prompt" in skipped["1"] and skipped["2"] == "atp: no noise today"
    assert (res.methods["facts"] == 7).all() and (res.methods["prompts"] == 21).all()
    atp = res.neurons[(res.neurons.method == "atp") & (res.neurons.budget == 2)]
    assert len(atp[atp.subject == "ireland"]) == 2


CAUSAL_FACTS = {
    # The first template does not end at the blank: a decoder skips it, so discovery's records
    # index the remaining prompts 1, 2, 3.  The others end at the blank once punctuation is dropped.
    "capital": (["[MASK] is the capital of [X].", "The capital of [X] is [MASK].", "[X]'s capital is [MASK],",
                 "The capital city of [X] is [MASK]"],
                [("Ireland", "Dublin"), ("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin")]),
    "located": (["[MASK] contains [X].", "[X] is in [MASK].", "Is [X] located in [MASK]?", "the city [X] is in [MASK]"],
                [("Dublin", "Ireland"), ("Paris", "France"), ("Rome", "Italy")]),
}


@pytest.mark.filterwarnings("ignore:answer .* is tokenized")  # the tiny BPE spells some answers apart
def test_causal_compare_end_to_end_on_a_run_that_skipped_prompts(tmp_path):
    from tiny_decoders import save_tiny_decoder

    from kneuron.data import save_facts_jsonl
    from kneuron.data.facts import Fact, FactSet, Relation

    model = save_tiny_decoder("gpt2", tmp_path / "gpt2")
    facts = FactSet([Fact(rel, s, o, [t.replace("[X]", s) for t in templates])
                     for rel, (templates, pairs) in CAUSAL_FACTS.items() for s, o in pairs],
                    {rel: Relation(rel) for rel in CAUSAL_FACTS})
    path = save_facts_jsonl(facts, tmp_path / "facts.jsonl")
    kn = kneuron.load(str(model), device="cpu")
    discover(kn, facts, tmp_path / "run", DiscoveryConfig(model=str(model), data=str(path)), progress=False)
    records = RunDir(tmp_path / "run").records()
    assert [r.get("used_prompts") for r in records.values()] == [[1, 2, 3]] * 7
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(model), "--out", str(out), "--run", str(tmp_path / "run"),
                 "--methods", "ig,grad_x_act,atp,random", "--budgets", "1,2,4", "--other-prompts", "4",
                 "--no-progress", "--device", "cpu"]) == 0
    methods, neurons = _tables(out)
    assert list(methods.columns) == COLUMNS
    rows = list(zip(methods["method"], methods["budget"]))
    assert rows == [(m, k) for m in ("ig", "grad_x_act", "atp", "random") for k in (1, 2, 4)] + [
        ("ig_refined", 0), ("ig_specific", 0)]
    # Every row is measured on the same facts and on the prompts discovery used (3 of 4 per fact).
    assert (methods["facts"] == 7).all() and (methods["prompts"] == 21).all()
    assert json.loads((out / "selection.json").read_text())["skipped"] == {}
    assert all(json.loads(line)["prompts"] == [0, 1, 2] for line in (out / "scores.jsonl").read_text().splitlines())
    assert methods[["suppress", "amplify", "other_relations_suppress"]].notna().all().all()
    # 3 prompts per fact: too few to hold any out, so the held-out columns are NaN and one warning says why.
    assert methods[["suppress_heldout", "amplify_heldout"]].isna().all().all() and (methods["heldout_prompts"] == 0).all()
    assert json.loads((out / "selection.json").read_text())["heldout"]["facts_without"] == 7
    top = methods[methods.budget > 0]
    assert (top["neurons_per_fact"] == top["budget"]).all()
    by = methods.set_index(["method", "budget"])
    assert by.loc[("ig", 1), "seconds_per_prompt"] != by.loc[("ig", 1), "seconds_per_prompt"]  # NaN: from the run
    # The refined sets are the run's, and the specific ones a part of them.
    run_sets = RunDir(tmp_path / "run").neurons()
    run_sets = run_sets[run_sets.method == "kn"]
    refined = neurons[neurons.method == "ig_refined"]
    assert list(zip(refined.subject, refined.layer, refined["index"])) == list(
        zip(run_sets.subject, run_sets.layer, run_sets["index"]))
    key = ["relation", "subject", "layer", "index"]
    specific = neurons[neurons.method == "ig_specific"]
    assert len(specific[key].merge(refined[key])) == len(specific)
    assert by.loc[("ig_specific", 0), "neurons_per_fact"] <= by.loc[("ig_refined", 0), "neurons_per_fact"]
    # IG's top neurons lower (and amplified, raise) their facts, far more than random ones
    # (measured: ig -22/-45/-62%, random +7/+9/+5%), more so with more neurons.
    for k in (1, 2, 4):
        assert by.loc[("ig", k), "suppress"] < min(0.0, by.loc[("random", k), "suppress"]) - 10
        assert by.loc[("ig", k), "amplify"] > max(0.0, by.loc[("random", k), "amplify"]) + 10
    assert by.loc[("ig", 4), "suppress"] < by.loc[("ig", 1), "suppress"]
    assert by.loc[("grad_x_act", 4), "suppress"] < by.loc[("random", 4), "suppress"] - 10
    # On the right prompts: recomputed through kn.suppress on the prompts that end at the blank.
    for method, budget in (("ig", 2), ("ig_refined", 0)):
        want = _row_by_hand(kn, facts, neurons, method, budget, 0.0)
        assert by.loc[(method, budget), "suppress"] == pytest.approx(want, rel=1e-4, abs=1e-4), method
    # Without --run, IG is computed on the decoder itself: same facts and prompts, IG again beats random.
    res = compare(kn, facts, tmp_path / "fresh", CompareConfig(model=str(model), data=str(path),
                                                               methods=["ig", "random"], budgets=[2], other_prompts=4))
    fresh = res.methods.set_index(["method", "budget"])
    assert (fresh["facts"] == 7).all() and (fresh["prompts"] == 21).all()
    assert fresh.loc[("ig", 2), "suppress"] < fresh.loc[("random", 2), "suppress"] - 10

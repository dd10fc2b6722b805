"""`kneuron edit`: update a fact and erase a relation from a run, save the edited model, revert it from disk."""

import json

import pytest
import torch

import kneuron
from kneuron.cli import main
from kneuron.edits import Edit, relation_neurons, select_update_neurons
from kneuron.experiments.rundata import RunData


@pytest.fixture(scope="module")
def run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("edit-run") / "run"
    assert main(["discover", "--model", str(tiny_world), "--data", str(tiny_world), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    return RunData.load(out)


def weights(path):
    return {k: v.clone() for k, v in kneuron.load(str(path), device="cpu").model.state_dict().items()}


SHARE = 1.0  # the tiny world's relations have 6 facts, so the paper's 10% filter (counter from 1) drops everything


def editable_fact(run):
    """A fact with neurons left after the share filter."""
    sets = run.sets("kn")
    found = [i for idx in run.universe.values() for i in idx
             if select_update_neurons(sets[i], [sets[j] for j in idx], SHARE)]
    assert found, "the tiny world's run has no fact with knowledge neurons"
    return found[0]


def test_update_save_apply_and_revert_bit_for_bit(run, tiny_world, tmp_path, capsys):
    i = editable_fact(run)
    fact = run.facts.facts[i]
    target = next(f.object for f in run.facts.facts if f.relation == fact.relation and f.object != fact.object)
    edit_file, edited = tmp_path / "u.kedit", tmp_path / "edited"
    assert main(["edit", "update", "--run", str(run.run_dir), "--subject", fact.subject, "--relation",
                 fact.relation, "--to", target, "--out", str(edit_file), "--save-model", str(edited),
                 "--share", str(SHARE), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "before -> after" in out and f"P({target})" in out
    edit = Edit.load(edit_file)
    sets = run.sets("kn")
    assert edit.kind == "update_fact" and edit.info["original"] == fact.object and edit.info["target"] == target
    assert edit.neurons == select_update_neurons(sets[i], [sets[j] for j in run.universe[fact.relation]], SHARE)
    assert edit.info["run"] == str(run.run_dir) and edit.info["subject"] == fact.subject

    # The saved model is the original with exactly the edit's value slots replaced.
    base, after = weights(tiny_world), weights(edited)
    kn = kneuron.load(str(tiny_world), device="cpu")
    with Edit.load(edit_file).apply(kn):
        expect = {k: v.clone() for k, v in kn.model.state_dict().items()}
    assert all(torch.equal(after[k], expect[k]) for k in base)
    assert sum(not torch.equal(after[k], base[k]) for k in base) == len({n.layer for n in edit.neurons})
    history = json.loads((edited / "kneuron_edits.json").read_text())
    assert [h["kind"] for h in history] == ["update_fact"]

    # Applying the file to the original gives the same files' weights; reverting the edited one gives the original.
    again, reverted = tmp_path / "again", tmp_path / "reverted"
    assert main(["edit", "apply", str(edit_file), "-m", str(tiny_world), "--out", str(again)]) == 0
    assert all(torch.equal(v, after[k]) for k, v in weights(again).items())
    assert main(["edit", "apply", str(edit_file), "-m", str(edited), "--revert", "--out", str(reverted),
                 "--prompt", fact.prompts[0]]) == 0
    assert all(torch.equal(v, base[k]) for k, v in weights(reverted).items())
    assert [h["kind"] for h in json.loads((reverted / "kneuron_edits.json").read_text())] == [
        "update_fact", "revert:update_fact"]
    capsys.readouterr()

    # Refusals: one line, exit 2, nothing written.
    assert main(["edit", "apply", str(edit_file), "-m", str(edited), "--out", str(tmp_path / "twice")]) == 2
    assert "already holds it" in capsys.readouterr().err and not (tmp_path / "twice").exists()
    assert main(["edit", "apply", str(edit_file), "-m", str(tiny_world), "--out", str(again)]) == 2
    assert "not empty" in capsys.readouterr().err

    assert main(["edit", "show", str(edit_file)]) == 0
    shown = capsys.readouterr().out
    assert "update_fact" in shown and str(edit.neurons[0]) in shown and "revertible from a saved model: yes" in shown


def test_update_from_explicit_neurons(tiny_world, tmp_path, capsys):
    from kneuron.world import load_world_facts

    facts = load_world_facts(tiny_world)
    a, b = facts.facts[0], next(f for f in facts.facts if f.object != facts.facts[0].object)
    path = tmp_path / "x.kedit"
    assert main(["edit", "update", "-m", str(tiny_world), "--neurons", "1:3,L0.5", "--from", a.object, "--to",
                 b.object, "--out", str(path), "--prompt", a.prompts[0], "--no-fit"]) == 0
    edit = Edit.load(path)
    assert [(n.layer, n.index) for n in edit.neurons] == [(1, 3), (0, 5)]
    assert edit.info["original"] == a.object and edit.info["target"] == b.object and "source" not in edit.info
    assert "before -> after" in capsys.readouterr().out


def test_signed_updates_on_the_trained_world_are_the_papers(run, tiny_world):
    """On BERT the default direction ("auto") is the paper's rule, bit for bit: results on the fact
    world stay what they were, although GELU lets a knowledge neuron fire negatively."""
    from kneuron.edits import neuron_signs, plan_update

    kn = kneuron.load(str(tiny_world), device="cpu")
    sets = run.sets("kn")
    checked = negative = 0
    for i in run.facts_with_neurons() if hasattr(run, "facts_with_neurons") else range(len(run.facts.facts)):
        neurons = sets[i]
        if not neurons:
            continue
        fact = run.facts.facts[i]
        target = next(f.object for f in run.facts.facts if f.relation == fact.relation and f.object != fact.object)
        default = plan_update(kn, neurons, fact.object, target, prompts=fact.prompts)
        paper = plan_update(kn, neurons, fact.object, target, direction="paper", embedding="input")
        assert default.info["direction"] == "paper" and torch.equal(default.values, paper.values)
        signs = neuron_signs(kn, neurons, fact.prompts)
        negative += signs.count(-1.0)
        signed = plan_update(kn, neurons, fact.object, target, prompts=fact.prompts, direction="signed")
        assert torch.equal(signed.values, paper.values) == (-1.0 not in signs)
        checked += 1
    assert checked >= 3 and not kn.adapter.gated(kn.model)


def test_update_finds_neurons_from_prompts_and_fits(tiny_world, tmp_path, capsys):
    from kneuron.edits import fit_update
    from kneuron.world import load_world_facts

    facts = load_world_facts(tiny_world)
    kn = kneuron.load(str(tiny_world), device="cpu")
    for a in (f for f in facts.facts if len(f.prompts) >= 4):  # a fact whose neurons can carry the edit
        b = next(f for f in facts.facts if f.relation == a.relation and f.object != a.object)
        found = kn.find_neurons(a.prompts[:4], a.object, min_prompts=3)
        if found and fit_update(kn, found, a.object, b.object, a.prompts[:4], max_scale=64).info["reached"]:
            break
    else:
        pytest.fail("no fact of the tiny world can be edited within strength 64")
    path = tmp_path / "fit.kedit"
    args = ["edit", "update", "-m", str(tiny_world), "--from", a.object, "--to", b.object, "--out", str(path),
            "--check", f"{b.prompts[0]}={b.object}", "--max-scale", "64"]
    for prompt in a.prompts[:4]:
        args += ["--prompt", prompt]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "knowledge neurons" in out and "checks: before -> after" in out
    edit = Edit.load(path)
    expect = kn.find_neurons(a.prompts[:4], a.object, min_prompts=3)
    assert edit.neurons == expect and edit.info["fit"] and edit.info["direction"] == "paper"  # BERT: auto = paper
    assert edit.info["reached"]  # the fitted edit makes the new answer top-1 on every prompt it was fitted to
    with edit.apply(kn):
        assert all(kn.predict(p, 1)[0][0].strip() == b.object for p in a.prompts[:4])
    # Within a strength too small to reach it, the edit is refused and nothing is written.
    refused = tmp_path / "refused.kedit"
    args[args.index(str(path))] = str(refused)
    args[args.index("64")] = str(edit.info["scale"] / 8)
    assert main(args) == 2
    assert "cannot make" in capsys.readouterr().err and not refused.exists()


def test_update_paper_flag_is_the_literal_rule(tiny_world, tmp_path):
    from kneuron.edits import plan_update
    from kneuron.world import load_world_facts

    facts = load_world_facts(tiny_world)
    a, b = facts.facts[0], next(f for f in facts.facts if f.object != facts.facts[0].object)
    path = tmp_path / "paper.kedit"
    assert main(["edit", "update", "-m", str(tiny_world), "--neurons", "1:3,0:5", "--from", a.object, "--to",
                 b.object, "--out", str(path), "--paper"]) == 0
    kn = kneuron.load(str(tiny_world), device="cpu")
    expect = plan_update(kn, [(1, 3), (0, 5)], a.object, b.object, direction="paper", embedding="input")
    assert torch.equal(Edit.load(path).values, expect.values)


def test_erase_relation_from_a_run(run, tiny_world, tmp_path, capsys):
    rel = next(r for r, sets in run.relation_sets("kn").items() if any(sets))
    path, edited = tmp_path / "e.kedit", tmp_path / "erased"
    assert main(["edit", "erase", "--run", str(run.run_dir), "--relation", rel, "--top-k", "3", "--out", str(path),
                 "--save-model", str(edited)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "other relations" in out
    edit = Edit.load(path)
    assert edit.neurons == relation_neurons(run.relation_sets("kn")[rel], 3)
    kn = kneuron.load(str(edited), device="cpu")
    for n in edit.neurons:
        assert torch.count_nonzero(kn.adapter.value_slots(kn.model, n.layer)[:, n.index]) == 0


@pytest.mark.parametrize("args, message", [
    (["update", "--to", "x", "--out", "e.kedit"], "give --model M --from OLD --prompt P"),
    (["update", "--to", "x", "--out", "e.kedit", "--from", "a"], "--from without --neurons needs --prompt"),
    (["update", "--to", "Paris", "--out", "e.kedit", "--from", "Paris", "--prompt", "p [MASK]."], "are the same answer"),
    (["update", "--to", "x", "--out", "e.kedit", "--from", "a", "--prompt", "p [MASK].", "--check", "nothing"],
     "write PROMPT=ANSWER"),
    (["update", "--to", "x", "--out", "e.kedit", "--from", "a", "--prompt", "p", "--direction", "up"],
     "--direction must be one of auto, signed, paper"),
    (["update", "--to", "x", "--out", "e.bin", "--neurons", "0:1", "--from", "a"], "ends in .kedit"),
    (["update", "--to", "x", "--out", "e.kedit", "--neurons", "0-1", "--from", "a"], "bad neuron '0-1'"),
    (["update", "--to", "x", "--out", "e.kedit", "--subject", "s", "--neurons", "0:1", "--from", "a"],
     "--subject without --run is the subject-neuron edit: --neurons has no effect there"),
    (["update", "--to", "x", "--out", "e.kedit", "--relation", "P36", "--neurons", "0:1", "--from", "a"],
     "--relation needs --run"),
    (["show", "missing.kedit"], "edit file not found"),
])
def test_bad_input_is_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["edit", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_based_refusals(run, capsys, tmp_path):
    rd = str(run.run_dir)
    assert main(["edit", "update", "--run", rd, "--subject", "Nobody", "--to", "x", "--out", str(tmp_path / "a.kedit")]) == 2
    assert "no fact about 'Nobody'" in capsys.readouterr().err
    subjects = {}
    for f in run.facts.facts:
        subjects.setdefault(f.subject, set()).add(f.relation)
    shared = next((s for s, rels in subjects.items() if len(rels) > 1), None)
    if shared is not None:
        assert main(["edit", "update", "--run", rd, "--subject", shared, "--to", "x", "--out",
                     str(tmp_path / "a.kedit")]) == 2
        assert "pass --relation" in capsys.readouterr().err
    assert main(["edit", "erase", "--run", rd, "--relation", "P19", "--out", str(tmp_path / "b.kedit")]) == 2
    assert "relation 'P19' is not in the run" in capsys.readouterr().err

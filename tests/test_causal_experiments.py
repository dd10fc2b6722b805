"""The paper's experiments on a causal LM, whose answers are often several tokens."""

import math

import pandas as pd
import pytest
import torch
from tiny_decoders import save_tiny_decoder

import kneuron
from kneuron.cli import main
from kneuron.experiments.rundata import RunData


@pytest.fixture(scope="module")
def repro(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    model = save_tiny_decoder("gpt2", root / "gpt2")
    out = root / "repro"
    assert main(["reproduce", "--model", str(model), "--data", str(tiny_world), "--out", str(out), "--no-progress",
                 "--max-tries", "30"]) == 0
    return model, out


def test_answer_log_probs_by_teacher_forcing_by_hand(repro):
    model, _ = repro
    kn = kneuron.load(str(model), device="cpu")
    prompt, answer = "The capital of France is [MASK]", "Paris Texas"
    ids = kn.answer_ids(answer)
    assert len(ids) > 1
    context = kn.tokenizer("The capital of France is")["input_ids"]
    with torch.no_grad():
        logits = kn.model(input_ids=torch.tensor([context + list(ids)])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    start = len(context) - 1
    by_hand = [float(logp[start + k, t]) for k, t in enumerate(ids)]
    top1 = all(int(logits[start + k].argmax()) == t for k, t in enumerate(ids))
    got, correct = kn.answer_log_probs([prompt], [answer])
    assert float(got[0]) == pytest.approx(sum(by_hand) / len(ids), rel=1e-6)  # fp32 logits, other kernels
    assert bool(correct[0]) == top1
    # One token: plain log p(gold) at the blank, as the paper's perplexity uses.
    word = next(w for w in ("capital", "France", "the", "of", "is") if len(kn.answer_ids(w)) == 1)
    one, _ = kn.answer_log_probs([prompt], [word])
    assert float(one[0]) == pytest.approx(float(torch.log_softmax(logits[start], -1)[kn.answer_id(word)]), rel=1e-6)


def test_reproduce_runs_end_to_end_on_a_causal_lm(repro):
    model, out = repro
    assert (out / "report.html").is_file()
    assert "prompt-types" in (out / "report.md").read_text()  # said to be skipped: it needs a masked LM
    erase = pd.read_csv(out / "tables" / "table5_erasing.csv")
    assert len(erase) and all(math.isfinite(v) and v > 1 for v in erase["ppl_before"])
    # The perplexities, recomputed by hand: teacher-forced log p of each answer token after the text
    # before the blank, averaged per prompt; PPL = exp(-mean over the relation's prompts); "after"
    # with the erased neurons' value slots (rows of GPT-2's c_proj) zeroed in a copy of the model.
    import copy

    kn = kneuron.load(str(model), device="cpu")
    run = RunData.load(out / "run")

    def ppl(model, rel):
        logps = []
        for i in run.universe[rel]:
            f = run.facts.facts[i]
            answer = list(kn.answer_ids(f.object))
            for prompt in f.prompts:
                assert prompt.rstrip(" .").endswith("[MASK]")
                context = kn.tokenizer(prompt.partition("[MASK]")[0].rstrip())["input_ids"]
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([context + answer[:-1]])).logits[0].double()
                logp = torch.log_softmax(logits[len(context) - 1:], -1)
                logps.append(float(sum(logp[k, t] for k, t in enumerate(answer))) / len(answer))
        return math.exp(-sum(logps) / len(logps))

    raw = pd.read_csv(out / "data" / "erase_relations.csv")  # table5 rounds; its raw data does not
    assert (raw.status == "ok").sum() == len(erase)
    for row in raw[raw.status == "ok"].itertuples():
        assert row.ppl_before == pytest.approx(ppl(kn.model, row.relation), rel=1e-6)
        erased = copy.deepcopy(kn.model)
        with torch.no_grad():
            for text in row.neuron_list.split():
                layer, index = map(int, text[1:].split("."))
                erased.transformer.h[layer].mlp.c_proj.weight[index] = 0.0
        assert row.ppl_after == pytest.approx(ppl(erased, row.relation), rel=1e-6)


def test_updating_skips_multi_token_answers(repro, tiny_world):
    from kneuron.experiments.updating import run_updating

    model, out = repro
    kn = kneuron.load(str(model), device="cpu")
    run = RunData.load(out / "run")
    edits, attempts = run_updating(kn, run, share=1.0, max_tries=40, edits_per_relation=3)
    assert attempts["multi_token"].sum() > 0  # the world's invented names are several BPE tokens
    for row in edits.itertuples():  # every edit that was made has single-token answers
        assert len(kn.answer_ids(row.original)) == 1 and len(kn.answer_ids(row.target)) == 1
    total = attempts[["edits", "no_kn", "incorrect_answer", "multi_token"]].sum(axis=1)
    assert (total <= attempts["tries"]).all()

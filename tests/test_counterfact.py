"""`kneuron.data.counterfact`: the CounterFact-style editing benchmark, its file and `kneuron data counterfact`.

The filter logic runs on stub model checks (a `top1` that knows which facts the "model" gets right);
one test runs the CLI end to end on a tiny random decoder, on a tiny PARAREL whose objects are that
decoder's own top-1 answers (so that some cases survive and some are dropped).
"""

from __future__ import annotations

import json

import pytest

from kneuron.cli import main
from kneuron.data import Fact, FactSet, Relation, load_pararel
from kneuron.data.counterfact import (
    REASONS,
    Case,
    Probe,
    build_cases,
    generation_prompts,
    load_cases,
    read_header,
    save_cases,
)
from kneuron.data.facts import ends_at_blank
from kneuron.errors import DataError, KneuronError


def _prompts(s: str, rel: str) -> list[str]:
    return [f"The {rel} of {s} is [MASK].", f"{s}'s {rel} is [MASK].", f"[MASK] is the {rel} of {s}.",
            f"The {rel} of {s}: [MASK].", f"Of {s}, the {rel} is [MASK]."]


def _toy() -> FactSet:
    rows = [("capital", s, o) for s, o in [("France", "Paris"), ("Gaul", "Paris"), ("Lutetia", "Paris"),
                                            ("Ireland", "Dublin"), ("Italy", "Rome"), ("Spain", "Madrid"),
                                            ("Wrongland", "Oslo"), ("New Land", "New York"),
                                            ("Austria", "Vienna"), ("Austria", "Wien")]]
    rows += [("lang", s, o) for s, o in [("France", "French"), ("Quebec", "French"), ("Mexico", "Spanish"),
                                         ("Chile", "Spanish")]]
    rows += [("born", s, "Paris") for s in ("Ann", "Bob", "Cy")]  # one object only: no target_new
    rows += [("lonely", "Solo", "Alpha"), ("lonely", "Wrongo", "Beta")]  # the only neighbour is wrong
    facts = [Fact(r, s, o, _prompts(s, r)) for r, s, o in rows]
    facts.append(Fact("capital", "Italy", "Rome", _prompts("Italy", "capital")))  # a repeated fact
    facts.append(Fact("capital", "Tiny", "Bern", ["The capital of Tiny is [MASK].", "[MASK] is Tiny's.",
                                                   "Tiny: [MASK].", "[MASK] rules Tiny."]))  # 2 usable (causal)
    return FactSet(facts, {r: Relation(r) for r in ("capital", "lang", "born", "lonely")}, "toy")


WRONG = ("Wrongland", "Wrongo", "Spain")  # subjects the stub model gets wrong


class StubModel:
    """top1: right unless the prompt names a WRONG subject; counts its calls and prompts."""

    def __init__(self):
        self.calls, self.asked = 0, []

    def __call__(self, prompts, answers):
        self.calls += 1
        self.asked += zip(prompts, answers)
        assert len(prompts) == len(answers) and all(p.count("[MASK]") == 1 for p in prompts)
        return [not any(f" {w} " in f" {p.replace(chr(39), ' ')} " for w in WRONG) for p in prompts]


def _single(obj: str) -> bool:
    return " " not in obj


def _build(facts=None, **kw):
    stub = StubModel()
    opts = dict(is_single_token=_single, causal=True, paraphrases=1, neighbours=2, others=2)
    cases, reports = build_cases(facts or _toy(), kw.pop("per_relation", 10), kw.pop("seed", 0), stub,
                                 **{**opts, **kw})
    return cases, {r.relation: r for r in reports}, stub


def test_drop_reasons_are_counted_and_add_up():
    cases, reports, stub = _build()
    cap, lang, born, lonely = reports["capital"], reports["lang"], reports["born"], reports["lonely"]
    assert (cap.facts, cap.duplicate, cap.not_one_token, cap.few_prompts, cap.model_wrong) == (12, 1, 1, 1, 2)
    assert cap.kept == 7 and cap.no_neighbour == 0 and cap.unexamined == 0  # Wrongland, Spain: wrong
    assert (born.no_target_new, born.kept) == (3, 0)
    assert (lonely.model_wrong, lonely.no_neighbour, lonely.kept) == (1, 1, 0)  # Solo: its one neighbour is wrong
    assert lang.kept == 4
    for r in reports.values():
        assert r.facts == r.dropped + r.unexamined + r.kept
        assert r.dropped == sum(getattr(r, k) for k in REASONS)
        assert r.tune + r.test == r.kept
    assert [c.case_id for c in cases] == list(range(11))
    assert stub.calls <= 4  # every relation's checks go to the model together, in rounds
    assert len(stub.asked) == len(set(stub.asked))  # nothing asked twice


def test_excluded_facts_never_become_cases_and_are_counted():
    everything, _, _ = _build()
    cases, reports, _ = _build(exclude={("capital", "FRANCE"), ("lang", "Quebec"), ("lang", "Atlantis")})
    kept = {(c.relation, c.subject) for c in cases}
    assert kept == {(c.relation, c.subject) for c in everything} - {("capital", "France"), ("lang", "Quebec")}
    assert (reports["capital"].excluded, reports["lang"].excluded, reports["born"].excluded) == (1, 1, 0)
    for r in reports.values():
        assert r.facts == r.dropped + r.unexamined + r.kept
    # an excluded subject may still be a neighbour: it is excluded as a case, not as a fact of the world
    assert any(n.prompt.startswith("The capital of France") for c in cases for n in c.neighbours)


def test_case_contents():
    facts = _toy()
    cases, _, _ = _build(facts)
    by_key = {(f.relation, f.subject, f.object): f for f in facts}
    objects = {r: {f.object for f in facts if f.relation == r} for r in ("capital", "lang")}
    for c in cases:
        fact = by_key[(c.relation, c.subject, c.target_true)]
        usable = [p for p in fact.prompts if ends_at_blank(p)]
        assert c.prompts[0] == usable[0] and len(c.prompts) >= 2 and len(c.paraphrases) == 1
        assert sorted(c.prompts + c.paraphrases) == sorted(usable) and not set(c.prompts) & set(c.paraphrases)
        assert c.target_new != c.target_true and c.target_new in objects[c.relation] and _single(c.target_new)
        assert c.subject not in WRONG
        assert 1 <= len(c.neighbours) <= 2 and len(c.others) == 2
        for nb in c.neighbours:
            assert c.subject not in nb.prompt and not any(w in nb.prompt for w in WRONG)
            assert nb.answer in objects[c.relation] and ends_at_blank(nb.prompt)
        for o in c.others:
            assert c.relation not in o.prompt and not any(w in o.prompt for w in WRONG)
        assert c.generation == [c.prompts[0].split(" [MASK]")[0], f"{c.subject} is"]
    austria = next(c for c in cases if c.subject == "Austria")  # an N-M subject: never its other object
    assert austria.target_new not in {"Vienna", "Wien"}
    france = next(c for c in cases if c.subject == "France" and c.relation == "capital")
    assert [nb.answer for nb in france.neighbours] == ["Paris", "Paris"]  # Gaul and Lutetia share the answer
    for rel in ("capital", "lang"):
        assert {c.split for c in cases if c.relation == rel} == {"tune", "test"}


def test_masked_models_use_every_prompt_and_the_generation_skips_a_leading_blank():
    cases, reports, _ = _build(causal=False, paraphrases=2)
    assert reports["capital"].few_prompts == 0  # Tiny has 4 prompts: enough for 2 + 2
    c = next(c for c in cases if c.subject == "Tiny")
    assert len(c.prompts) == 2 and any(not ends_at_blank(p) for p in c.prompts + c.paraphrases)
    assert generation_prompts("[MASK] is the capital of Tiny.", "Tiny") == ["Tiny is"]


def test_seeded_per_relation_and_tries_are_capped():
    a, _, _ = _build(seed=3)
    assert a == _build(seed=3)[0]
    assert any(_build(seed=s)[0] != a for s in (4, 5, 6))
    cases, reports, _ = _build(per_relation=2, seed=3)
    cap = reports["capital"]
    assert cap.kept == 2 and cap.unexamined > 0 and cap.facts == cap.dropped + cap.unexamined + cap.kept
    assert {c.split for c in cases if c.relation == "capital"} == {"tune", "test"}
    _, capped, _ = _build(max_tries=1)
    assert capped["capital"].kept + capped["capital"].model_wrong + capped["capital"].no_neighbour == 1
    for bad in [dict(per_relation=0), dict(tune_share=1.0), dict(neighbours=0), dict(seed=-1)]:
        with pytest.raises(KneuronError):
            _build(**bad)


# --- the file ------------------------------------------------------------------------------------


def _case(i=0, **kw) -> Case:
    base = dict(case_id=i, split="tune", relation="P36", subject="France", target_true="Paris", target_new="Rome",
                prompts=["The capital of France is [MASK].", "France's capital is [MASK]."],
                paraphrases=["France's capital city is [MASK]."],
                neighbours=[Probe("The capital of Gaul is [MASK].", "Paris")],
                others=[Probe("Rome is in [MASK].", "Italy")], generation=["The capital of France is", "France is"])
    return Case(**{**base, **kw})


def test_save_and_load_round_trip_atomically(tmp_path):
    path = tmp_path / "sub" / "cases.jsonl"
    cases = [_case(0), _case(1, split="test", subject="Japan")]
    save_cases(cases, path, header=["kneuron data counterfact --seed 1", "two\nlines"])
    assert read_header(path) == ["kneuron data counterfact --seed 1", "two lines"]
    assert load_cases(path) == cases
    before = path.read_bytes()
    with pytest.raises(TypeError):  # a failure while writing leaves the old file and no temp file
        save_cases([_case(0), _case(1, prompts={1, 2})], path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["cases.jsonl"]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("target_new"), "missing field 'target_new'"),
    (lambda r: r.update(prompts="The capital is [MASK]."), "field 'prompts' must be a non-empty list of strings"),
    (lambda r: r.update(case_id="0"), "field 'case_id' must be a non-negative integer"),
    (lambda r: r.update(split="train"), "field 'split' must be 'tune' or 'test'"),
    (lambda r: r["neighbours"][0].pop("answer"), "neighbours[0]: missing field 'answer'"),
    (lambda r: r.update(paraphrases=["no blank"]), "paraphrases[0] must contain exactly one [MASK]"),
])
def test_load_errors_name_file_and_line(tmp_path, edit, message):
    path = tmp_path / "cases.jsonl"
    save_cases([_case(0)], path, header=["settings"])
    row = _case(1).to_json()
    edit(row)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    with pytest.raises(DataError) as exc:
        load_cases(path)
    assert str(exc.value) == f"{path}:3: {message}" or str(exc.value).startswith(f"{path}:3: {message}")
    assert "\n" not in str(exc.value)


def test_load_errors_for_bad_files(tmp_path):
    for text, phrase in [("# only a header\n", "no cases found"), ('{"case_id": 0,\n', ":1: invalid JSON"),
                         ("[1]\n", ":1: expected a JSON object")]:
        path = tmp_path / "bad.jsonl"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match=phrase):
            load_cases(path)
    with pytest.raises(DataError, match="not found"):
        load_cases(tmp_path / "missing.jsonl")


# --- the shared PARAREL, with a model that always knows the answer -------------------------------


def test_shared_pararel_with_a_gold_model(shared_data):
    facts = load_pararel(shared_data / "pararel")
    relations_of = {}  # a prompt -> its relations (some relations share templates)
    for f in facts:
        for p in f.prompts:
            relations_of.setdefault(p, set()).add(f.relation)
    objects = {}
    for f in facts:
        objects.setdefault(f.relation, set()).add(f.object)
    cases, reports = build_cases(facts, 3, 0, lambda prompts, answers: [True] * len(prompts), causal=True,
                                 is_single_token=lambda o: " " not in o)
    by_rel = {r.relation: r for r in reports}
    assert len(by_rel) == 34 and all(r.facts == r.dropped + r.unexamined + r.kept for r in reports)
    assert by_rel["P37"].few_prompts == by_rel["P37"].facts - by_rel["P37"].not_one_token  # 1 usable template
    kept = [r for r in reports if r.kept]
    assert len(kept) >= 20 and all(r.kept == 3 and r.tune and r.test for r in kept)
    for c in cases:
        assert c.target_new != c.target_true and c.target_new in objects[c.relation]
        assert len(c.prompts) >= 2 and len(c.paraphrases) == 2 and not set(c.prompts) & set(c.paraphrases)
        assert all(c.relation in relations_of[p] and ends_at_blank(p) for p in c.prompts + c.paraphrases)
        assert len(c.neighbours) == 5 and len(c.others) == 5
        shares = [nb.answer == c.target_true for nb in c.neighbours]
        assert shares == sorted(shares, reverse=True)  # those sharing the true answer first
        sharing = {f.subject for f in facts if f.relation == c.relation and f.object == c.target_true} - {c.subject}
        assert sum(shares) == min(5, len(sharing))
        assert all(c.relation in relations_of[nb.prompt] for nb in c.neighbours)
        assert not {nb.prompt for nb in c.neighbours} & set(c.prompts + c.paraphrases)
        assert all(c.relation not in relations_of[o.prompt] for o in c.others)
    assert {c.split for c in cases} == {"tune", "test"}


# --- the command, end to end on a tiny decoder ---------------------------------------------------


TEMPLATES = {"P36": ["The capital of [X] is [Y].", "[X]'s capital is [Y].", "The capital city of [X] is [Y].",
                     "[Y] is the capital of [X].", "[X] has the capital [Y]."],
             "P17": ["[X] is located in [Y].", "[X] lies in [Y].", "[Y] contains [X].", "[X] is a place in [Y].",
                     "[X], in [Y]."]}


def _own_answers(model_dir) -> dict[str, list[list[str]]]:
    """Facts the tiny decoder answers top-1 (its own predictions), plus one wrong and one multi-token fact."""
    import kneuron
    from kneuron.models.tokens import is_single_token

    kn = kneuron.load(str(model_dir), device="cpu")
    syllables = ["Ka", "Lo", "Mi", "Re", "Su", "Ta", "Vo", "Ze"]
    subjects = [a + b.lower() + "n" for a in syllables for b in syllables]
    pairs = {}
    for rel, templates in TEMPLATES.items():
        prompts = [templates[0].replace("[X]", s).replace("[Y]", "[MASK]") for s in subjects]
        predicted = kn.blank_logits(prompts).argmax(dim=-1).tolist()
        found = []
        for s, pred in zip(subjects, predicted):
            text = kn.tokenizer.decode([pred]).strip()
            if text.isalpha() and is_single_token(kn.tokenizer, text) and kn.answer_ids(text) == (pred,):
                found.append([s, text])
        assert len({o for _, o in found}) >= 2, found  # two objects at least: a target_new exists
        wrong = next(o for _, o in found if o != found[0][1])
        pairs[rel] = found[:8] + [[found[0][0] + "ia", wrong], ["Dublinia", "Dublin"]]
    return pairs


def test_cli_end_to_end_on_a_tiny_decoder(llama_dir, make_pararel, tmp_path, capsys):
    data = make_pararel(patterns=TEMPLATES, pairs=_own_answers(llama_dir),
                        relations=[{"relation": "P36", "label": "capital"}, {"relation": "P17", "label": "country"}])
    out = tmp_path / "cases.jsonl"
    args = ["data", "counterfact", "--model", str(llama_dir), "--data", f"pararel:{data}", "-n", "4", "--seed", "7",
            "--neighbours", "3", "--others", "2", "--device", "cpu", "--out", str(out)]
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "P36" in captured.out and "kept" in captured.out
    # the legend and the column headers come from the one mapping of drop reasons
    assert all(r.label in captured.out for k, r in REASONS.items() if k != "excluded")
    assert all(r.header.split("\n")[0] in captured.out for k, r in REASONS.items() if k != "excluded")
    header = read_header(out)
    assert header[0].startswith("kneuron data counterfact --model m --data pararel --per-relation 4 --seed 7")
    assert str(tmp_path) not in out.read_text(encoding="utf-8")  # no absolute paths
    assert "causal LM" in header[1]
    rows = {ln.split(":")[0].strip(): [int(x) for x in ln.split(":")[1].replace("(", ",").replace(")", "")
                                                         .replace("/", ",").split(",")]
            for ln in header if ln.startswith("  P")}
    assert set(rows) == {"P36", "P17"}
    for nums in rows.values():
        facts, *dropped, unexamined, kept, tune, test = nums
        assert facts == 10 and facts == sum(dropped) + unexamined + kept and kept == tune + test
        assert dropped[:2] == [0, 1]  # "Dublin": two tokens
        assert kept >= 1
    cases = load_cases(out)
    assert {c.relation for c in cases} == {"P36", "P17"} and all(c.neighbours and c.others for c in cases)
    assert all(ends_at_blank(p) for c in cases for p in c.prompts + c.paraphrases)
    first = out.read_bytes()
    assert main(args) == 0  # same seed and model: the same bytes
    assert out.read_bytes() == first
    capsys.readouterr()
    # --exclude: a second file of other facts; its header says what it left out and how
    more = tmp_path / "more.jsonl"
    assert main(args[:-1] + [str(more), "--exclude", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "cluded" in shown and "…" not in shown  # eleven columns, none cut short
    again = load_cases(more)
    assert not {(c.relation, c.subject) for c in again} & {(c.relation, c.subject) for c in cases}
    header = read_header(more)
    assert "--exclude cases.jsonl" in header[0] and "a case of an excluded file" in header[4]
    excluded_column = [int(ln.split(":")[1].split(",")[7]) for ln in header if ln.startswith("  P")]
    assert sum(excluded_column) == len(cases)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(out.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    target = tmp_path / "never.jsonl"
    assert main(args[:-1] + [str(target), "--exclude", str(broken)]) != 0
    err = capsys.readouterr().err
    assert "broken.jsonl" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1 and not target.exists()
    for bad, phrase in [(["-n", "0"], "--per-relation"), (["--relations", "P999"], "P999"),
                        (["--data", str(tmp_path / "nowhere")], "nowhere"), (["--tune-share", "1"], "--tune-share")]:
        target = tmp_path / "never.jsonl"
        rc = main(args[:-1] + [str(target)] + bad)
        err = capsys.readouterr().err
        assert rc != 0 and phrase in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not target.exists()

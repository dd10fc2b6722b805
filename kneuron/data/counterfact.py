"""A CounterFact-style editing benchmark built from a fact set, usually the shipped PARAREL.

CounterFact (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") was itself built
from ParaRel.  Each *case* asks an editor to replace a fact the model knows (`target_true`) by a
counterfactual (`target_new`, another object of the same relation) and measures:

- efficacy on `prompts` (the prompts the editor may use, to select neurons and to edit),
- generalisation on `paraphrases` (prompts of the same fact the editor never sees),
- specificity on `neighbours` (other subjects of the same relation, those sharing the true answer
  first: what a too-broad edit would break) and `others` (facts of other relations),
- fluency on `generation` (plain-text beginnings to let the edited model continue).

The benchmark is model-aware and seeded, like `kneuron.data.sampling`:

- Usable prompts: for a causal LM only the prompts that end at the blank (`ends_at_blank`); for a
  masked LM all of them.  Prompts keep kneuron's "[MASK]" form either way.
- A fact is a candidate when it is the first copy of a repeated (relation, subject, object) (PARAREL
  repeats 21), its object is one token for the model, it has at least
  `paraphrases + min_prompts` distinct usable prompts, and its relation has another one-token
  object that is not an object of the same subject (the `target_new` pool).
- `prompts[0]` is always the relation's first usable template (filled with the subject); the
  paraphrases are drawn, seeded per case, from the other usable templates, and the prompts are
  the usable templates left, in template order.
- A candidate is kept when the model answers `target_true` top-1 on `prompts[0]` and at least one
  neighbour correctly.  Neighbours are other subjects of the relation (facts with a one-token
  object), those whose object is `target_true` first, each group in a seeded order; a neighbour's
  prompt is the relation's first usable template filled with its subject (its own first usable
  prompt), and only the neighbours the model answers top-1 are kept.  At most `neighbour_tries`
  neighbours are tried per case, so that a weak model does not scan a whole relation.
- Candidates are tried in a seeded order per relation until `per_relation` cases are kept or
  `max_tries` candidates (default 20 x per_relation) were tried; the candidates never tried are
  counted as `unexamined`, not as dropped.  The checks of all relations go to the model together,
  in rounds, so that its batches are full (a 135M decoder does PARAREL with 10 cases per relation
  in a few CPU minutes).
- `others` are drawn, seeded per case, from the facts of OTHER relations that the model was found
  to answer correctly during the run (each a checked fact or neighbour: its first usable prompt and
  object), so that a change on them is a change of something the model knew.  Facts of the case's
  subject, and prompts that are also prompts of the case's relation (PARAREL's P176/P178,
  P364/P407 and P495/P740 share templates), are left out.  Fewer than asked are given when the run
  found fewer.
- `generation`: the text of `prompts[0]` before the blank (e.g. "The capital of France is"; left
  out when a masked LM's prompt starts with the blank) and "SUBJECT is".  They hold no "[MASK]".
- `split`: per relation, a seeded draw puts `round(tune_share * n)` of its n cases in "tune" and
  the rest in "test", with at least one of each when n >= 2.

Model checks are one batched function `top1(prompts, answers) -> [bool, ...]` (see `model_top1`),
so the filter logic can be tested with a stub.  The file is JSONL, one case per line, after `#`
comment lines with the settings and the per-relation counts (`cases_header`); `save_cases` writes
it atomically, `load_cases` reads it back and `read_header` its comment lines.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from kneuron.data.facts import MASK, FactSet, ends_at_blank
from kneuron.data.jsonl import json_lines
from kneuron.errors import DataError
from kneuron.ranges import POSITIVE, SEED, Range

SPLITS = ("tune", "test")
SHARE = Range(0, 1, low_open=True, high_open=True)  # 0 or 1 would leave one split empty
COUNT = Range(0, integer=True)

Top1 = Callable[[list[str], list[str]], Sequence[bool]]
"""`top1(prompts, answers)`: whether the model's top-1 filler at each prompt's blank is the answer."""


@dataclass(frozen=True)
class Probe:
    """A prompt and the answer the model is expected to give (a neighbour or another fact)."""

    prompt: str
    answer: str


@dataclass
class Case:
    case_id: int
    split: str  # "tune" or "test"
    relation: str
    subject: str
    target_true: str
    target_new: str
    prompts: list[str]  # for neuron selection and the edit; prompts[0] is the checked one
    paraphrases: list[str]  # the same fact, never given to the editor
    neighbours: list[Probe]  # same relation, other subjects; the model answers them correctly
    others: list[Probe]  # other relations; the model answers them correctly
    generation: list[str]  # plain-text beginnings for fluency

    @property
    def fact(self) -> tuple[str, str]:
        """(relation, subject casefolded): what `--exclude` and `--exclude-tuned` compare across files."""
        return self.relation, self.subject.casefold()

    def to_json(self) -> dict:
        return asdict(self)


class DropReason(NamedTuple):
    """Why a fact became no case: `label` for the cases file's header, `header` for the CLI's narrow table."""

    label: str
    header: str


REASONS = {
    # PARAREL repeats a few (relation, subject, object): the first copy counts
    "duplicate": DropReason("repeated fact", "re-\npeated"),
    "not_one_token": DropReason("object not one token", "not 1\ntoken"),
    "few_prompts": DropReason("too few usable prompts", "few\nprompts"),
    "no_target_new": DropReason("no target_new", "no\nnew"),
    "model_wrong": DropReason("model wrong on the fact", "model\nwrong"),
    "no_neighbour": DropReason("no correct neighbour", "no\nnbr"),
    # `exclude`: the facts of cases files already measured
    "excluded": DropReason("a case of an excluded file", "ex-\ncluded"),
}


@dataclass
class CaseReport:
    """What became of one relation's facts: every fact is counted once, in the first column that applies.

    `facts == dropped + unexamined + kept`, where `dropped` sums the `REASONS` columns.
    """

    relation: str
    facts: int
    duplicate: int = 0
    not_one_token: int = 0
    few_prompts: int = 0
    no_target_new: int = 0
    model_wrong: int = 0
    no_neighbour: int = 0
    excluded: int = 0
    unexamined: int = 0  # candidates never tried: the relation had its cases already
    kept: int = 0
    tune: int = 0

    @property
    def test(self) -> int:
        return self.kept - self.tune

    @property
    def dropped(self) -> int:
        return sum(getattr(self, k) for k in REASONS)


class _Checks:
    """Verdicts of `top1`, asked in batches and remembered per (prompt, answer)."""

    def __init__(self, top1: Top1):
        self.top1, self.known = top1, {}
        self.calls = 0

    def ensure(self, probes: Iterable[tuple[str, str]]) -> None:
        todo = list(dict.fromkeys(p for p in probes if p not in self.known))
        if not todo:
            return
        verdicts = list(self.top1([p for p, _ in todo], [a for _, a in todo]))
        if len(verdicts) != len(todo):
            raise ValueError(f"top1 returned {len(verdicts)} verdicts for {len(todo)} prompts")
        self.calls += 1
        self.known.update((key, bool(v)) for key, v in zip(todo, verdicts))

    def ok(self, probe: tuple[str, str]) -> bool:
        return self.known[probe]


def _check_settings(per_relation, seed, paraphrases, neighbours, others, tune_share, min_prompts, tries,
                    max_tries) -> None:
    POSITIVE.check("per_relation", per_relation)
    SEED.check("seed", seed)
    COUNT.check("paraphrases", paraphrases)
    POSITIVE.check("neighbours", neighbours)
    COUNT.check("others", others)
    SHARE.check("tune_share", tune_share)
    POSITIVE.check("min_prompts", min_prompts)
    POSITIVE.check("neighbour_tries", tries)
    POSITIVE.check("max_tries", max_tries)


class _Relation:
    """One relation's facts, its candidates in their seeded order, and how far the walk has got."""

    def __init__(self, rel: str, idx: list[int], report: CaseReport, candidates: list[int], limit: int):
        self.rel, self.idx, self.report = rel, idx, report
        self.candidates, self.limit = candidates, limit
        self.pos = 0  # candidates[:pos] are decided
        self.kept: list[tuple[int, list[Probe]]] = []


def build_cases(
    facts: FactSet,
    per_relation: int,
    seed: int,
    top1: Top1,
    *,
    is_single_token: Callable[[str], bool] | None = None,
    causal: bool = False,
    paraphrases: int = 2,
    neighbours: int = 5,
    others: int = 5,
    tune_share: float = 0.5,
    min_prompts: int = 2,
    max_tries: int | None = None,
    neighbour_tries: int | None = None,
    exclude: Collection[tuple[str, str]] = (),
    log: Callable[[str], None] | None = None,
) -> tuple[list[Case], list[CaseReport]]:
    """Up to `per_relation` cases per relation (module docstring), and what each relation dropped.

    `top1(prompts, answers)` is called in batches that gather every relation; `is_single_token(object)`
    (None: every object is) filters objects; `causal` keeps only the prompts ending at the blank.
    At most `max_tries` candidates (default 20 x per_relation) are checked per relation and at most
    `neighbour_tries` neighbours (default max(4 x neighbours, 20)) per case: this bounds the cost on
    relations the model mostly gets wrong.  `exclude`: (relation, subject) pairs that never become
    cases (subjects compared case-blind), so that a second file adds cases disjoint from a first
    (`excluded_facts`).  Same facts, seed, settings and verdicts: the same cases.
    `log` is told about progress.
    """
    max_tries = 20 * per_relation if max_tries is None and isinstance(per_relation, int) else max_tries
    tries = max(4 * neighbours, 20) if neighbour_tries is None and isinstance(neighbours, int) else neighbour_tries
    _check_settings(per_relation, seed, paraphrases, neighbours, others, tune_share, min_prompts, tries, max_tries)
    all_facts = facts.facts
    excluded = {(rel, subject.casefold()) for rel, subject in exclude}
    verdict_of_object: dict[str, bool] = {}

    def one_token(obj: str) -> bool:
        if is_single_token is None:
            return True
        if obj not in verdict_of_object:
            verdict_of_object[obj] = bool(is_single_token(obj))
        return verdict_of_object[obj]

    usable = [list(dict.fromkeys(p for p in f.prompts if not causal or ends_at_blank(p))) for f in all_facts]
    single = [one_token(f.object) for f in all_facts]
    # The probe that checks a fact (as a case, a neighbour or another fact): first usable prompt, object.
    probe = [(u[0], f.object) if u and s else None for f, u, s in zip(all_facts, usable, single)]
    checks = _Checks(top1)

    groups: dict[str, list[int]] = {}
    for i, f in enumerate(all_facts):
        groups.setdefault(f.relation, []).append(i)
    objects_of: dict[tuple[str, str], set[str]] = {}  # (relation, subject) -> its objects
    for f in all_facts:
        objects_of.setdefault((f.relation, f.subject), set()).add(f.object)
    pools = {rel: sorted({all_facts[i].object for i in idx if single[i]}) for rel, idx in groups.items()}

    def new_targets(i: int) -> list[str]:
        f = all_facts[i]
        return [o for o in pools[f.relation] if o not in objects_of[(f.relation, f.subject)]]

    states = []
    for rel, idx in groups.items():
        rep = CaseReport(rel, len(idx))
        candidates, seen = [], set()
        for i in idx:
            if all_facts[i].key in seen:
                rep.duplicate += 1
                continue
            seen.add(all_facts[i].key)
            if (rel, all_facts[i].subject.casefold()) in excluded:
                rep.excluded += 1
            elif not single[i]:
                rep.not_one_token += 1
            elif len(usable[i]) < paraphrases + min_prompts:
                rep.few_prompts += 1
            elif not new_targets(i):
                rep.no_target_new += 1
            else:
                candidates.append(i)
        random.Random(f"{seed}:{rel}:order").shuffle(candidates)
        states.append(_Relation(rel, idx, rep, candidates, min(max_tries, len(candidates))))

    rounds = 0
    while True:  # each round: a window of candidates of every unfinished relation, checked in one batch
        active = [st for st in states if len(st.kept) < per_relation and st.pos < st.limit]
        if not active:
            break
        rounds += 1
        if log is not None:
            log(f"round {rounds}: {len(active)} relation{'' if len(active) == 1 else 's'} still short of cases, "
                f"{sum(len(st.kept) for st in states)} cases so far")
        windows = [st.candidates[st.pos:min(st.pos + max(4 * (per_relation - len(st.kept)), 32), st.limit)]
                   for st in active]
        checks.ensure(probe[i] for w in windows for i in w)
        flat = []  # (state, fact) whose fact is right: their neighbours are checked next, all together
        for st, window in zip(active, windows):
            need = per_relation - len(st.kept)
            taken = 0
            for i in window:
                if taken == need:
                    break
                st.pos += 1
                if checks.ok(probe[i]):
                    flat.append((st, i))
                    taken += 1
                else:
                    st.report.model_wrong += 1
        found = _correct_neighbours([(i, st.idx) for st, i in flat], all_facts, probe, checks, neighbours, tries,
                                    seed)
        for (st, i), nbs in zip(flat, found):
            if nbs:
                st.kept.append((i, nbs))
            else:
                st.report.no_neighbour += 1

    picked: list[tuple[int, list[str], list[str], str, list[Probe]]] = []  # fact, prompts, paraphrases, new, nbs
    splits: dict[int, str] = {}
    for st in states:
        rep = st.report
        rep.unexamined = len(st.candidates) - st.pos
        st.kept.sort(key=lambda item: item[0])
        rep.kept = len(st.kept)
        tune = _draw_tune(len(st.kept), tune_share, random.Random(f"{seed}:{st.rel}:split"))
        rep.tune = len(tune)
        for k, (i, nbs) in enumerate(st.kept):
            f = all_facts[i]
            rng = random.Random(f"{seed}:{st.rel}:{f.subject}:{f.object}")
            chosen = set(rng.sample(range(1, len(usable[i])), paraphrases))
            prompts = [p for j, p in enumerate(usable[i]) if j not in chosen]
            para = [p for j, p in enumerate(usable[i]) if j in chosen]
            picked.append((i, prompts, para, rng.choice(new_targets(i)), nbs))
            splits[i] = "tune" if k in tune else "test"

    known = [i for i, p in enumerate(probe) if p is not None and checks.known.get(p)]
    # PARAREL has relations with shared templates (P176/P178, P364/P407, P495/P740): another fact
    # must not be the case's own question in another relation's name, so its subject and its
    # prompt's text must differ from the case's.
    case_relations = {all_facts[i].relation for i, *_ in picked}
    texts = {rel: {p for i in groups[rel] for p in all_facts[i].prompts} for rel in case_relations}
    cases = []
    for case_id, (i, prompts, para, new, nbs) in enumerate(picked):
        f = all_facts[i]
        rng = random.Random(f"{seed}:{f.relation}:{f.subject}:{f.object}:others")
        pool = [j for j in known if all_facts[j].relation != f.relation and all_facts[j].subject != f.subject
                and probe[j][0] not in texts[f.relation]]
        drawn = sorted(rng.sample(pool, min(others, len(pool))))
        cases.append(Case(
            case_id=case_id, split=splits[i], relation=f.relation, subject=f.subject, target_true=f.object,
            target_new=new, prompts=prompts, paraphrases=para, neighbours=nbs,
            others=[Probe(probe[j][0], all_facts[j].object) for j in drawn],
            generation=generation_prompts(prompts[0], f.subject)))
    if log is not None:
        log(f"{len(cases)} cases; {len(checks.known):,} prompts checked in {checks.calls} batches")
    return cases, [st.report for st in states]


def _correct_neighbours(group: list[tuple[int, list[int]]], all_facts, probe, checks: _Checks, wanted: int,
                        tries: int, seed: int) -> list[list[Probe]]:
    """For each (fact, its relation's fact indices): up to `wanted` neighbours the model answers, in order."""
    orders = []
    for i, idx in group:
        f = all_facts[i]
        by_subject: dict[str, int] = {}
        for j in idx:  # one fact per other subject, the one sharing the true answer when there is one
            g = all_facts[j]
            if probe[j] is None or g.subject == f.subject:
                continue
            if g.subject not in by_subject or (g.object == f.object != all_facts[by_subject[g.subject]].object):
                by_subject[g.subject] = j
        rng = random.Random(f"{seed}:{f.relation}:{f.subject}:{f.object}:neighbours")
        same = [j for j in by_subject.values() if all_facts[j].object == f.object]
        rest = [j for j in by_subject.values() if all_facts[j].object != f.object]
        rng.shuffle(same)
        rng.shuffle(rest)
        orders.append((same + rest)[:tries])
    good: list[list[int]] = [[] for _ in group]
    cursor = [0] * len(group)
    while True:  # rounds: each case asks for as many more as it lacks, all cases in one batch
        asked = []
        for k, order in enumerate(orders):
            take = order[cursor[k]:cursor[k] + wanted - len(good[k])]
            cursor[k] += len(take)
            asked.append(take)
        if not any(asked):
            break
        checks.ensure(probe[j] for take in asked for j in take)
        for k, take in enumerate(asked):
            good[k] += [j for j in take if checks.ok(probe[j])]
    return [[Probe(probe[j][0], all_facts[j].object) for j in js] for js in good]


def _draw_tune(n: int, share: float, rng: random.Random) -> set[int]:
    """Which of n cases go to "tune": round(share * n), at least one and at most n - 1 when n >= 2."""
    if n == 0:
        return set()
    if n == 1:
        return {0} if rng.random() < share else set()
    return set(rng.sample(range(n), min(max(round(share * n), 1), n - 1)))


def generation_prompts(prompt: str, subject: str) -> list[str]:
    """Beginnings for fluency: the prompt's text before the blank, and "SUBJECT is"."""
    before = prompt.partition(MASK)[0].rstrip()
    return list(dict.fromkeys(t for t in (before, f"{subject} is") if t))


# -- model checks -------------------------------------------------------------------------------


def model_top1(kn, batch: int = 512) -> Top1:
    """`top1` for a `KnowledgeModel`: the argmax of `kn.blank_logits`, `batch` prompts at a time."""

    def top1(prompts: list[str], answers: list[str]) -> list[bool]:
        out = []
        for start in range(0, len(prompts), batch):
            predicted = kn.blank_logits(prompts[start:start + batch]).argmax(dim=-1).tolist()
            for pred, answer in zip(predicted, answers[start:start + batch]):
                try:
                    ids = kn.answer_ids(answer)
                except ValueError:  # PromptError: not a token of this tokenizer
                    ids = ()
                out.append(len(ids) == 1 and ids[0] == pred)
        return out

    return top1


def model_checks(kn, batch: int = 512) -> dict:
    """The model-dependent arguments of `build_cases` for a `KnowledgeModel`, as keyword arguments."""
    from kneuron.data.sampling import _single_token_check

    return {"top1": model_top1(kn, batch), "is_single_token": _single_token_check(kn.tokenizer),
            "causal": not kn.is_masked}


# -- the file -----------------------------------------------------------------------------------


def cases_header(settings: dict, cases: Sequence[Case], reports: Sequence[CaseReport],
                 notes: Sequence[str] = ()) -> list[str]:
    """The `#` lines of a cases file: `settings` (option -> value, in order; None left out), `notes`,
    the totals and the per-relation counts.  Keep absolute paths out of `settings`."""
    tune = sum(c.split == "tune" for c in cases)
    reasons = shown_reasons(reports)
    lines = ["kneuron data counterfact " + " ".join(f"--{k} {v}" for k, v in settings.items() if v is not None),
             *notes,
             f"{len(cases)} cases ({tune} tune, {len(cases) - tune} test) from "
             f"{sum(r.kept > 0 for r in reports)} of {len(reports)} relations",
             "prompts[0]: the relation's first usable template, answered top-1 by the model; neighbours and "
             "others: answered top-1 by the model; generation: text before the blank, and 'SUBJECT is'",
             "relation: facts, " + ", ".join(REASONS[k].label for k in reasons) + ", unexamined, kept (tune/test)"]
    lines += [f"  {r.relation}: {r.facts}, " + ", ".join(str(getattr(r, k)) for k in reasons)
              + f", {r.unexamined}, {r.kept} ({r.tune}/{r.test})" for r in reports]
    return lines


def shown_reasons(reports: Sequence[CaseReport]) -> list[str]:
    """The drop columns worth showing: every reason, and `excluded` only when something was."""
    return [k for k in REASONS if k != "excluded" or any(r.excluded for r in reports)]


def excluded_facts(paths: Iterable[str | Path]) -> set[tuple[str, str]]:
    """The fact (`Case.fact`) of every case in the cases files `paths`, any split: `build_cases(exclude=...)`."""
    return {c.fact for path in paths for c in load_cases(path)}


def sample_cases(cases: Sequence[Case], count: int, seed: int = 0) -> list[Case]:
    """A seeded sample of `count` cases in file order, drawn round robin over the relations (each
    relation's cases shuffled once) so that every relation is represented."""
    by_relation: dict[str, list[Case]] = {}
    for c in cases:
        by_relation.setdefault(c.relation, []).append(c)
    rng = random.Random(seed)
    for group in by_relation.values():
        rng.shuffle(group)
    picked: set[int] = set()
    while len(picked) < min(count, len(cases)):
        for group in by_relation.values():
            if group and len(picked) < count:
                picked.add(group.pop().case_id)
    return [c for c in cases if c.case_id in picked]


def save_cases(cases: Sequence[Case], path: str | Path, header: Sequence[str] | None = None) -> Path:
    """Write the cases as JSONL after `header` as `#` lines; the file appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            for line in header or []:
                fh.write("# " + " ".join(str(line).splitlines()) + "\n")
            for case in cases:
                fh.write(json.dumps(case.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"cases file not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            yield from enumerate(fh, 1)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def read_header(path: str | Path) -> list[str]:
    """The `#` comment lines at the top of a cases file, without the '# ' (indentation kept)."""
    out = []
    for _, line in _lines(Path(path)):
        if not line.startswith("#"):
            break
        out.append(line.rstrip("\r\n").removeprefix("#").removeprefix(" "))
    return out


def _string(value, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field '{name}' must be a non-empty string, got {value!r}")
    return value


def _prompt_list(value, where: str, name: str, blank: bool = True, empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value) or (not value and not empty):
        raise DataError(f"{where}: field '{name}' must be a{'' if empty else ' non-empty'} list of strings, "
                        f"got {value!r}"[:300])
    for k, p in enumerate(value):
        if blank and p.count(MASK) != 1:
            raise DataError(f"{where}: {name}[{k}] must contain exactly one {MASK}: {p!r}")
    return list(value)


def _probes(value, where: str, name: str) -> list[Probe]:
    if not isinstance(value, list):
        raise DataError(f"{where}: field '{name}' must be a list of {{\"prompt\", \"answer\"}} objects, got {value!r}")
    out = []
    for k, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataError(f"{where}: {name}[{k}] must be a {{\"prompt\", \"answer\"}} object, got {item!r}")
        for key in ("prompt", "answer"):
            if key not in item:
                raise DataError(f"{where}: {name}[{k}]: missing field '{key}'")
        prompt = _string(item["prompt"], where, f"{name}[{k}].prompt")
        if prompt.count(MASK) != 1:
            raise DataError(f"{where}: {name}[{k}].prompt must contain exactly one {MASK}: {prompt!r}")
        out.append(Probe(prompt, _string(item["answer"], where, f"{name}[{k}].answer")))
    return out


def _parse_case(obj, where: str) -> Case:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for f in fields(Case):
        if f.name not in obj:
            raise DataError(f"{where}: missing field '{f.name}'")
    case_id = obj["case_id"]
    if isinstance(case_id, bool) or not isinstance(case_id, int) or case_id < 0:
        raise DataError(f"{where}: field 'case_id' must be a non-negative integer, got {case_id!r}")
    if obj["split"] not in SPLITS:
        raise DataError(f"{where}: field 'split' must be 'tune' or 'test', got {obj['split']!r}")
    return Case(
        case_id=case_id, split=obj["split"],
        **{k: _string(obj[k], where, k) for k in ("relation", "subject", "target_true", "target_new")},
        prompts=_prompt_list(obj["prompts"], where, "prompts"),
        paraphrases=_prompt_list(obj["paraphrases"], where, "paraphrases", empty=True),
        neighbours=_probes(obj["neighbours"], where, "neighbours"),
        others=_probes(obj["others"], where, "others"),
        generation=_prompt_list(obj["generation"], where, "generation", blank=False, empty=True),
    )


def load_cases(path: str | Path) -> list[Case]:
    """The cases of a file written by `save_cases`; a bad line raises `DataError` naming file and line."""
    path = Path(path)
    cases, seen = [], set()
    for where, obj in json_lines(path, "cases file"):
        case = _parse_case(obj, where)
        if case.case_id in seen:
            raise DataError(f"{where}: duplicate case_id {case.case_id}")
        seen.add(case.case_id)
        cases.append(case)
    if not cases:
        raise DataError(f"{path}: no cases found")
    return cases

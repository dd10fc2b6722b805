"""The unit of knowledge: a fact and the paraphrased prompts that express it.

Every loader (PARAREL, the fact world, users' JSONL files) produces a `FactSet`, so the rest of
the pipeline never cares where facts came from.  Prompts hold the literal placeholder
`MASK` ("[MASK]"); a model adapter swaps in the model's own mask token at tokenization time.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field

MASK = "[MASK]"


def ends_at_blank(prompt: str) -> bool:
    """Whether a causal LM can answer `prompt`: nothing but punctuation after the blank.

    The prompt must end at the blank once its trailing punctuation is dropped: after the blank only
    whitespace and Unicode punctuation (`.` `,` `?` `!` `;` `:` `"` `'` `)` `…` `»` ...) may follow,
    never a letter, digit or symbol.  A prompt without a blank is taken whole (it ends at the blank).
    """
    return all(c.isspace() or unicodedata.category(c).startswith("P") for c in prompt.partition(MASK)[2])


@dataclass(frozen=True)
class Relation:
    id: str
    label: str = ""
    type: str = ""  # LAMA type: "1-1", "N-1", "N-M", or "" when unknown


@dataclass
class Fact:
    relation: str
    subject: str
    object: str
    prompts: list[str]
    language: str = ""  # language code of the prompts and object; "" when the data names none

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.relation, self.subject, self.object)


@dataclass
class MultilingualFact:
    """One fact in several languages: a language -> prompts map and a language -> answer map."""

    relation: str
    subject: str
    prompts: dict[str, list[str]]
    answers: dict[str, str]

    @property
    def languages(self) -> list[str]:
        return list(self.prompts)

    def per_language(self) -> list[Fact]:
        """The same fact as one `Fact` per language (what the single-language pipeline reads)."""
        return [Fact(self.relation, self.subject, self.answers[lang], list(ps), lang)
                for lang, ps in self.prompts.items()]


def group_languages(facts) -> list[MultilingualFact]:
    """Per-language facts of the same (relation, subject) gathered again, in order of first appearance."""
    groups: dict[tuple[str, str], MultilingualFact] = {}
    for f in facts:
        g = groups.setdefault((f.relation, f.subject), MultilingualFact(f.relation, f.subject, {}, {}))
        g.prompts.setdefault(f.language, []).extend(f.prompts)
        g.answers[f.language] = f.object
    return list(groups.values())


@dataclass
class FactSet:
    facts: list[Fact]
    relations: dict[str, Relation] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self):
        return iter(self.facts)

    @property
    def num_prompts(self) -> int:
        return sum(len(f.prompts) for f in self.facts)

    def by_relation(self) -> dict[str, list[Fact]]:
        """Facts grouped by relation, relations in order of first appearance, facts in file order."""
        groups: dict[str, list[Fact]] = {}
        for f in self.facts:
            groups.setdefault(f.relation, []).append(f)
        return groups

    def subset(self, relations: list[str] | None) -> FactSet:
        """Only the given relations (in the order given); None keeps everything."""
        if not relations:
            return self
        from kneuron.errors import DataError

        have = self.by_relation()
        missing = [r for r in relations if r not in have]
        if missing:
            raise DataError(f"relation(s) not in {self.source or 'the data'}: {', '.join(missing)}")
        facts = [f for r in relations for f in have[r]]
        rels = {r: self.relations.get(r, Relation(r)) for r in relations}
        return FactSet(facts, rels, self.source)

    def stats(self) -> dict:
        per_rel = Counter(f.relation for f in self.facts)
        return {
            "relations": len(per_rel),
            "facts": len(self.facts),
            "prompts": self.num_prompts,
        }

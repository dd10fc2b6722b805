"""An invented world of countries, cities, companies and people, and the text that describes it.

Why invent one: the knowledge-neuron pipeline needs a masked LM that *knows* facts whose answers
are single tokens, plus paraphrased cloze prompts and open-domain sentences (BINGREL).  Real
models and data need the network; a generated world (and a small BERT trained on it, see
`kneuron.world.train`) make every experiment run offline, in minutes, on a CPU.

Design (mirrors LAMA / PARAREL / BINGREL so that the same code runs on both):

* Entities are pronounceable, capitalised single words built from syllables, with a suffix per
  kind ("-ia" countries, "-ish" languages ...).  No name is a substring of another name or of any
  word of the templates and sentences, so "tail in sentence" is a plain substring test.
* Relations have LAMA types.  1-1 (capital, currency): bijective.  N-1 (continent, official
  language, located in, headquarters, born in, citizen of, employer): many subjects share few
  objects (Zipf-weighted draws).  N-M (speaks, plays, member of): every person has 1-3 true
  objects; like LAMA the fact list holds exactly one (the first), the others show up in the
  sentences ("speaks [Y] and Velmish"), and persons appear in several N-M relations.
* Facts correlate the way real ones do (people are mostly citizens of the country they were born
  in and speak its language), so the model can also learn regularities, not only a lookup table.
* Each relation has >= 5 PARAREL-style cloze templates, some with [Y] not at the end; one is held
  out of training and serves as an unseen paraphrase at test time.
* Each fact gets BINGREL-style bags: `th_bags` (sentences naming head and tail, written from a
  separate sentence pool, never the cloze templates) and `h_bags` (sentences about the head that
  never name the tail).  A few facts get an empty bag, as in the real data.

The fixed tables (templates, sentence pools, translations, fillers, name syllables) are data files,
`kneuron/world/data/*.json`, read once by `kneuron.world.tables`; this module holds the logic.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from kneuron.data.facts import MASK, Fact, FactSet, Relation
from kneuron.world import tables

X, Y = "[X]", "[Y]"

# Bump when templates, sentence pools or naming rules change (here or in kneuron/world/data/*.json):
# a cached default world built by an older generator is then rebuilt instead of silently reused.
GENERATOR_REVISION = 1


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of the world.  The defaults give 12 relations and about 600 facts."""

    n_countries: int = 40
    n_continents: int = 5
    n_languages: int = 12
    cities_per_country: int = 3
    n_companies: int = 24
    n_persons: int = 90
    n_instruments: int = 10
    n_organizations: int = 12
    facts_per_relation: int = 60  # cap per relation; the 1-1 ones keep every country (bijective)
    th_per_fact: tuple[int, int] = (2, 5)  # inclusive range of th sentences per fact
    h_per_fact: tuple[int, int] = (2, 5)
    empty_bag_rate: float = 0.03  # chance that a fact's th (or h) bag is empty, as in BINGREL
    relations: tuple[str, ...] | None = None  # keep only these relation ids (small test worlds)
    # Languages of the prompts: "en" and the invented ones of `TRANSLATIONS`.  With more than one,
    # every fact is stated in each (entity names shared) and `Fact.language` is set.
    languages: tuple[str, ...] = ("en",)

    def __post_init__(self):
        unknown = [lang for lang in self.languages if lang != "en" and lang not in TRANSLATIONS]
        if unknown or not self.languages:
            raise ValueError(f"unknown world language(s) {unknown or '(none given)'}; "
                             f"known: en, {', '.join(TRANSLATIONS)}")

    @property
    def multilingual(self) -> bool:
        return tuple(self.languages) != ("en",)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["th_per_fact"] = list(self.th_per_fact)
        d["h_per_fact"] = list(self.h_per_fact)
        d["relations"] = list(self.relations) if self.relations is not None else None
        d["languages"] = list(self.languages)
        if not self.multilingual:  # English-only worlds keep the config (and cache key) they always had
            del d["languages"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        d = dict(d)
        for key in ("th_per_fact", "h_per_fact"):
            if key in d:
                d[key] = tuple(d[key])
        if d.get("relations") is not None:
            d["relations"] = tuple(d["relations"])
        if "languages" in d:
            d["languages"] = tuple(d["languages"])
        return cls(**d)


@dataclass(frozen=True)
class RelationSpec:
    """Static description of one relation: who relates to what, and how people say it."""

    id: str
    label: str
    type: str
    subject_kind: str
    object_kind: str
    templates: tuple[str, ...]
    held_out: int  # index into templates of the paraphrase never used in training
    sentences: tuple[str, ...]  # th pool: head and tail; "{alt}" = another true object (N-M)


@dataclass
class WorldRelation:
    id: str
    label: str
    type: str
    templates: list[str]
    held_out_template: int
    subject_kind: str = ""
    object_kind: str = ""
    # Other languages: language -> (templates, index of the held-out one); English is `templates`.
    translations: dict[str, tuple[list[str], int]] = field(default_factory=dict)

    @property
    def relation(self) -> Relation:
        return Relation(self.id, self.label, self.type)

    @property
    def train_templates(self) -> list[str]:
        return [t for i, t in enumerate(self.templates) if i != self.held_out_template]

    def templates_in(self, language: str) -> tuple[list[str], int]:
        """(templates, held-out index) in `language` ("" or "en": the English ones)."""
        if language in ("", "en"):
            return self.templates, self.held_out_template
        return self.translations[language]

    def to_dict(self) -> dict:
        d = {
            "relation": self.id,
            "label": self.label,
            "type": self.type,
            "templates": list(self.templates),
            "held_out_template": self.held_out_template,
            "subject_kind": self.subject_kind,
            "object_kind": self.object_kind,
        }
        if self.translations:
            d["translations"] = {lang: {"templates": list(t), "held_out_template": k}
                                 for lang, (t, k) in self.translations.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WorldRelation:
        translations = {lang: (list(t["templates"]), int(t["held_out_template"]))
                        for lang, t in d.get("translations", {}).items()}
        return cls(d["relation"], d["label"], d["type"], list(d["templates"]), int(d["held_out_template"]),
                   d.get("subject_kind", ""), d.get("object_kind", ""), translations)


@dataclass
class World:
    """A generated world: relations, facts (with prompts), BINGREL bags and the entity lists."""

    config: WorldConfig
    seed: int
    relations: list[WorldRelation]
    facts: list[Fact]
    bags: dict[str, list[dict[str, list[str]]]]  # relation id -> aligned with that relation's facts
    entities: dict[str, list[str]] = field(default_factory=dict)
    all_objects: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # N-M truth

    def fact_set(self, source: str = "fact-world") -> FactSet:
        return FactSet(list(self.facts), {r.id: r.relation for r in self.relations}, source)

    def relation(self, rel_id: str) -> WorldRelation:
        for r in self.relations:
            if r.id == rel_id:
                return r
        raise KeyError(rel_id)

    def objects_of(self, rel_id: str) -> list[str]:
        """Distinct gold objects of a relation, in first-seen order (chance = 1/len)."""
        return list(dict.fromkeys(f.object for f in self.facts if f.relation == rel_id))

    def texts(self) -> list[str]:
        """Every string the model may read (templates, sentences, names): the vocabulary's source."""
        out: list[str] = []
        for r in self.relations:
            for templates in [r.templates] + [t for t, _ in r.translations.values()]:
                out.extend(t.replace(X, " ").replace(Y, " ") for t in templates)
        for bags in self.bags.values():
            for b in bags:
                out.extend(b["th_bags"])
                out.extend(b["h_bags"])
        for names in self.entities.values():
            out.extend(names)
        return out


def fill_template(template: str, subject: str) -> str:
    """The authors' prompt construction: subject in, object replaced by the mask placeholder."""
    return template.replace(X, subject).replace(Y, MASK)


# --------------------------------------------------------------------------------------------
# Relations, templates and sentence pools

# The tables live in kneuron/world/data/*.json (read once by `kneuron.world.tables`); these names
# keep the shapes they had when they were literals here.
RELATIONS: tuple[RelationSpec, ...] = tuple(RelationSpec(**spec) for spec in tables.relations())

# Two invented languages for the multilingual world (translations.json): language -> relation ->
# (templates, index of the held-out one).  Only MULTILINGUAL_RELATIONS exist in several languages.
TRANSLATIONS: dict[str, dict[str, tuple[tuple[str, ...], int]]]
MULTILINGUAL_RELATIONS: tuple[str, ...]
TRANSLATIONS, MULTILINGUAL_RELATIONS = tables.translations()


def multilingual_world_config() -> WorldConfig:
    """The multilingual world: English and both invented languages, the relations they share."""
    return WorldConfig(relations=MULTILINGUAL_RELATIONS, languages=("en", *TRANSLATIONS))


# Sentences about the head only (h_bags): nothing here names the tail.
HEAD_SENTENCES: dict[str, tuple[str, ...]] = tables.head_sentences()
FILLERS: dict[str, tuple[str, ...]] = tables.fillers()
ENTITY_SLOTS = {"country": "country", "city": "city", "person": "person"}

# Name building: syllables plus a suffix per kind, so names read like the kind they name; real
# words the syllable rules can produce are never used.
_NAMES = tables.names()
_ONSETS: tuple[str, ...] = _NAMES["onsets"]
_VOWELS: tuple[str, ...] = _NAMES["vowels"]
_CODAS: tuple[str, ...] = _NAMES["codas"]
_SUFFIXES: dict[str, tuple[str, ...]] = _NAMES["suffixes"]
_REAL_WORDS: frozenset[str] = _NAMES["real_words"]


def _corpus_words(languages: tuple[str, ...] = ("en",)) -> set[str]:
    """Lower-cased words of every fixed string a name must never collide with."""
    text = [t for lang in languages if lang != "en" for ts, _ in TRANSLATIONS[lang].values() for t in ts]
    for spec in RELATIONS:
        text.extend(spec.templates)
        text.extend(spec.sentences)
    for pool in HEAD_SENTENCES.values():
        text.extend(pool)
    for pool in FILLERS.values():
        text.extend(pool)
    return {w.lower() for w in re.findall(r"[A-Za-z]+", " ".join(text))}


class _Namer:
    def __init__(self, rng: random.Random, languages: tuple[str, ...] = ("en",)):
        self.rng = rng
        self.taken: list[str] = []
        self.words = _corpus_words(languages)

    def _ok(self, name: str) -> bool:
        low = name.lower()
        if len(low) < 6 or len(low) > 10 or low in _REAL_WORDS:
            return False
        if any(low in w for w in self.words):
            return False
        # No name may contain another (and vice versa): substring tests stay exact.
        return not any(low in t or t in low for t in self.taken)

    def make(self, kind: str) -> str:
        rng = self.rng
        for _ in range(10000):
            n_syl = rng.choice((2, 2, 3)) if kind == "person" else rng.choice((1, 2, 2))
            stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syl))
            suffix = rng.choice(_SUFFIXES[kind])
            if suffix and stem[-1] in "aeiou" and suffix[0] in "aeiou":
                stem = stem[:-1]
            name = (stem + suffix).capitalize()
            if self._ok(name):
                self.taken.append(name.lower())
                return name
        raise RuntimeError(f"could not invent a fresh {kind} name")  # pragma: no cover

    def many(self, kind: str, n: int) -> list[str]:
        return [self.make(kind) for _ in range(n)]


def _zipf_choice(rng: random.Random, items: list[str], s: float = 1.0) -> str:
    """Skewed draw: N-1 relations need a few objects shared by many subjects."""
    weights = [1.0 / (i + 1) ** s for i in range(len(items))]
    return rng.choices(items, weights=weights, k=1)[0]


def _several(rng: random.Random, items: list[str], first: str, k_max: int = 3) -> list[str]:
    """1..k_max true objects for an N-M relation, `first` being the one the fact list shows."""
    k = min(rng.choice((1, 2, 2, 3)), k_max)
    others = [x for x in items if x != first]
    return [first] + rng.sample(others, min(k - 1, len(others)))


# --------------------------------------------------------------------------------------------
# Generation


def generate_world(config: WorldConfig | None = None, seed: int = 0) -> World:
    """Build a world from `seed` alone: the same (config, seed) always gives the same world."""
    config = config or WorldConfig()
    rng = random.Random(seed)
    namer = _Namer(rng, tuple(config.languages))
    c = config
    if c.n_countries < 2 or c.n_persons < 2 or c.cities_per_country < 1:
        raise ValueError("a world needs at least 2 countries, 2 persons and 1 city per country")

    ent: dict[str, list[str]] = {
        "continent": namer.many("continent", c.n_continents),
        "country": namer.many("country", c.n_countries),
        "city": namer.many("city", c.n_countries * c.cities_per_country),
        "currency": namer.many("currency", c.n_countries),
        "language": namer.many("language", c.n_languages),
        "company": namer.many("company", c.n_companies),
        "person": namer.many("person", c.n_persons),
        "instrument": namer.many("instrument", c.n_instruments),
        "organization": namer.many("organization", c.n_organizations),
    }
    countries, cities = ent["country"], ent["city"]

    # Attributes of countries and cities.
    capital = {k: cities[i * c.cities_per_country] for i, k in enumerate(countries)}
    city_country = {cities[i * c.cities_per_country + j]: k
                    for i, k in enumerate(countries) for j in range(c.cities_per_country)}
    currency = dict(zip(countries, ent["currency"]))
    # Every continent / language is used at least once, the rest skewed.
    continent = {}
    language = {}
    for i, k in enumerate(countries):
        continent[k] = ent["continent"][i] if i < c.n_continents else _zipf_choice(rng, ent["continent"], 0.7)
        language[k] = ent["language"][i] if i < c.n_languages else _zipf_choice(rng, ent["language"], 0.8)
    company_city = {co: _zipf_choice(rng, cities, 0.8) for co in ent["company"]}

    # Persons: correlated attributes, N-M ones with several true objects.
    person_attr: dict[str, dict[str, list[str]]] = {}
    for p in ent["person"]:
        born = _zipf_choice(rng, cities, 0.9)
        home = city_country[born] if rng.random() < 0.7 else rng.choice(countries)
        first_lang = language[home] if rng.random() < 0.6 else rng.choice(ent["language"])
        person_attr[p] = {
            "W7": [born],
            "W8": [home],
            "W9": [_zipf_choice(rng, ent["company"], 0.7)],
            "W10": _several(rng, ent["language"], first_lang),
            "W11": _several(rng, ent["instrument"], _zipf_choice(rng, ent["instrument"], 0.6)),
            "W12": _several(rng, ent["organization"], _zipf_choice(rng, ent["organization"], 0.6)),
        }

    def sample(items: list[str]) -> list[str]:
        """Subjects of a relation: a capped random subset, kept in entity order."""
        if len(items) <= c.facts_per_relation:
            return list(items)
        keep = set(rng.sample(range(len(items)), c.facts_per_relation))
        return [x for i, x in enumerate(items) if i in keep]

    truth: dict[str, list[tuple[str, list[str]]]] = {
        "W1": [(k, [capital[k]]) for k in countries],
        "W2": [(k, [currency[k]]) for k in countries],
        "W3": [(k, [continent[k]]) for k in sample(countries)],
        "W4": [(k, [language[k]]) for k in sample(countries)],
        "W5": [(x, [city_country[x]]) for x in sample(cities)],
        "W6": [(co, [company_city[co]]) for co in sample(ent["company"])],
    }
    for rel in ("W7", "W8", "W9", "W10", "W11", "W12"):
        truth[rel] = [(p, person_attr[p][rel]) for p in sample(ent["person"])]

    specs = [s for s in RELATIONS if config.relations is None or s.id in config.relations]
    if config.relations is not None:
        unknown = set(config.relations) - {s.id for s in RELATIONS}
        if unknown:
            raise ValueError(f"unknown world relation(s): {', '.join(sorted(unknown))}")
    others = [lang for lang in config.languages if lang != "en"]
    untranslated = [s.id for s in specs for lang in others if s.id not in TRANSLATIONS[lang]]
    if untranslated:
        raise ValueError(f"relation(s) {', '.join(sorted(set(untranslated)))} exist only in English; "
                         f"a multilingual world can hold {', '.join(MULTILINGUAL_RELATIONS)}")

    relations: list[WorldRelation] = []
    facts: list[Fact] = []
    bags: dict[str, list[dict[str, list[str]]]] = {}
    all_objects: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        relation = WorldRelation(spec.id, spec.label, spec.type, list(spec.templates), spec.held_out,
                                 spec.subject_kind, spec.object_kind,
                                 {lang: (list(TRANSLATIONS[lang][spec.id][0]), TRANSLATIONS[lang][spec.id][1])
                                  for lang in others})
        relations.append(relation)
        rel_bags = []
        for subj, objs in truth[spec.id]:
            obj = objs[0]
            for lang in config.languages:  # English only: language "" (the world's files stay as they were)
                templates, _ = relation.templates_in(lang)
                facts.append(Fact(spec.id, subj, obj, [fill_template(t, subj) for t in templates],
                                  lang if config.multilingual else ""))
            all_objects[(spec.id, subj)] = list(objs)
            rel_bags.append(_bags_for(rng, config, spec, subj, obj, objs[1:], ent))
        bags[spec.id] = rel_bags

    return World(config, seed, relations, facts, bags, ent, all_objects)


def _fill_slots(rng: random.Random, text: str, ent: dict[str, list[str]], avoid: set[str],
                alt: str | None = None) -> str:
    """Fill {year}, {city} ... placeholders; entity slots never reuse the head or the tail."""

    def repl(m: re.Match) -> str:
        slot = m.group(1)
        if slot == "alt":
            assert alt is not None
            return alt
        if slot in FILLERS:
            return rng.choice(FILLERS[slot])
        pool = [e for e in ent[ENTITY_SLOTS[slot]] if e not in avoid]
        return rng.choice(pool)

    return re.sub(r"\{(\w+)\}", repl, text)


def _bags_for(rng: random.Random, c: WorldConfig, spec: RelationSpec, subj: str, obj: str,
              alts: list[str], ent: dict[str, list[str]]) -> dict[str, list[str]]:
    avoid = {subj, obj, *alts}
    th_pool = [s for s in spec.sentences if "{alt}" not in s or alts]
    n_th = 0 if rng.random() < c.empty_bag_rate else rng.randint(*c.th_per_fact)
    th = [
        _fill_slots(rng, s, ent, avoid, rng.choice(alts) if alts else None).replace(X, subj).replace(Y, obj)
        for s in rng.sample(th_pool, min(n_th, len(th_pool)))
    ]
    h_pool = list(HEAD_SENTENCES[spec.subject_kind])
    n_h = 0 if rng.random() < c.empty_bag_rate else rng.randint(*c.h_per_fact)
    h = [_fill_slots(rng, s, ent, avoid).replace(X, subj) for s in rng.sample(h_pool, min(n_h, len(h_pool)))]
    return {"th_bags": th, "h_bags": h}


def relation_specs() -> tuple[RelationSpec, ...]:
    """The full catalogue of world relations (ids, labels, types, templates)."""
    return RELATIONS


__all__ = [
    "GENERATOR_REVISION",
    "MULTILINGUAL_RELATIONS",
    "TRANSLATIONS",
    "multilingual_world_config",
    "RELATIONS",
    "RelationSpec",
    "World",
    "WorldConfig",
    "WorldRelation",
    "fill_template",
    "generate_world",
    "relation_specs",
]

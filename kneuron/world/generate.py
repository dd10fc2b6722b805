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
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from kneuron.data.facts import MASK, Fact, FactSet, Relation

X, Y = "[X]", "[Y]"

# Bump when templates, sentence pools or naming rules change: a cached default world built by an
# older generator is then rebuilt instead of silently reused.
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

RELATIONS: tuple[RelationSpec, ...] = (
    RelationSpec(
        "W1", "capital", "1-1", "country", "city",
        (
            "The capital of [X] is [Y].",
            "[X]'s capital is [Y].",
            "[Y] is the capital of [X].",
            "The capital city of [X] is [Y].",
            "[Y] is the capital city of [X].",
            "[X] has its capital in [Y].",
        ),
        5,
        (
            "Travelers arriving in [Y] soon learn that it has been the capital of [X] since {year}.",
            "The government of [X] meets in [Y] every {season}.",
            "[Y], the seat of government of [X], hosted the {event} in {year}.",
            "Most ministries of [X] are based in [Y].",
            "In {year} the parliament of [X] moved to [Y].",
            "[Y] is the largest and most {adj} city of [X].",
            "The president of [X] lives in [Y].",
        ),
    ),
    RelationSpec(
        "W2", "currency", "1-1", "country", "currency",
        (
            "The currency of [X] is the [Y].",
            "[X] uses the [Y] as its currency.",
            "The [Y] is the currency of [X].",
            "In [X], people pay with the [Y].",
            "[X]'s currency is the [Y].",
            "The official currency of [X] is the [Y].",
        ),
        1,
        (
            "Prices in [X] are given in [Y].",
            "The central bank of [X] printed new [Y] notes in {year}.",
            "Visitors to [X] should carry some [Y] in cash.",
            "The [Y] lost value when [X] faced a crisis in {year}.",
            "In [X], a coffee costs about two [Y].",
            "[X] introduced the [Y] in {year}.",
        ),
    ),
    RelationSpec(
        "W3", "continent", "N-1", "country", "continent",
        (
            "[X] is a country in [Y].",
            "[X] lies on the continent of [Y].",
            "[Y] is the continent where [X] lies.",
            "The continent of [X] is [Y].",
            "[X] is part of the continent [Y].",
            "[X] belongs to the continent of [Y].",
        ),
        5,
        (
            "[X] is one of the most {adj} countries of [Y].",
            "Flights from [X] to other parts of [Y] are cheap.",
            "[X] joined the council of [Y] in {year}.",
            "Of all the nations in [Y], [X] has the most {adj} coastline.",
            "The map of [Y] shows [X] in the north.",
            "[X] hosted the games of [Y] in {year}.",
        ),
    ),
    RelationSpec(
        "W4", "official language", "N-1", "country", "language",
        (
            "The official language of [X] is [Y].",
            "In [X], people speak [Y].",
            "[Y] is the official language of [X].",
            "The people of [X] speak [Y].",
            "[X] has [Y] as its official language.",
            "[Y] is spoken in [X].",
        ),
        4,
        (
            "Most schools in [X] teach in [Y].",
            "Road signs in [X] are written in [Y].",
            "The laws of [X] are published in [Y].",
            "Newspapers in [X] are printed in [Y].",
            "[Y] has been the language of government in [X] since {year}.",
            "Children in [X] learn [Y] from an early age.",
        ),
    ),
    RelationSpec(
        "W5", "located in", "N-1", "city", "country",
        (
            "[X] is a city in [Y].",
            "[X] is located in [Y].",
            "[Y] is the country where [X] is located.",
            "The city of [X] lies in [Y].",
            "[X] is in the country of [Y].",
            "[X] is a city located in [Y].",
        ),
        2,
        (
            "[X] is one of the most {adj} cities of [Y].",
            "The trains from [X] reach every corner of [Y].",
            "[X] is the third largest city in [Y].",
            "Many people in [Y] spend their holidays in [X].",
            "The university of [X] is the oldest in [Y].",
            "[X], [Y], hosted the {event} in {year}.",
        ),
    ),
    RelationSpec(
        "W6", "headquarters location", "N-1", "company", "city",
        (
            "[X] is headquartered in [Y].",
            "The headquarters of [X] is in [Y].",
            "[X] has its headquarters in [Y].",
            "[Y] is home to the headquarters of [X].",
            "[X] is based in [Y].",
            "The main office of [X] is in [Y].",
        ),
        2,
        (
            "[X] opened its main office in [Y] in {year}.",
            "The tower of [X] dominates the skyline of [Y].",
            "[X] employs many people in [Y].",
            "From its offices in [Y], [X] runs its business.",
            "[X] moved its headquarters to [Y] in {year}.",
            "Workers of [X] commute to [Y] every morning.",
        ),
    ),
    RelationSpec(
        "W7", "place of birth", "N-1", "person", "city",
        (
            "[X] was born in [Y].",
            "[X] is originally from [Y].",
            "[Y] is the birthplace of [X].",
            "The birthplace of [X] is [Y].",
            "[X] was born in the city of [Y].",
            "[Y] is the city where [X] was born.",
        ),
        5,
        (
            "[X] grew up in [Y] and left it in {year}.",
            "Born in [Y] in {year}, [X] later became famous.",
            "[X] often returns to [Y], where the family still lives.",
            "The people of [Y] are proud that [X] was born there.",
            "[X] spent a {adj} childhood in [Y].",
            "A street in [Y] is named after [X], who was born in the city.",
        ),
    ),
    RelationSpec(
        "W8", "country of citizenship", "N-1", "person", "country",
        (
            "[X] is a citizen of [Y].",
            "[X] holds citizenship of [Y].",
            "[Y] is the country of citizenship of [X].",
            "[X] has the citizenship of [Y].",
            "[X] is a [Y] citizen.",
            "The citizenship of [X] is [Y].",
        ),
        5,
        (
            "[X] received a passport from [Y] in {year}.",
            "[X] represents [Y] at the {event}.",
            "As a citizen of [Y], [X] voted in the election of {year}.",
            "[X] became a national of [Y] after many years.",
            "[X] travels on a [Y] passport.",
            "The embassy of [Y] helped [X] during the trip.",
        ),
    ),
    RelationSpec(
        "W9", "employer", "N-1", "person", "company",
        (
            "[X] works for [Y].",
            "[X] is employed by [Y].",
            "[Y] is the employer of [X].",
            "[X] is an employee of [Y].",
            "[X] works at [Y].",
            "The employer of [X] is [Y].",
        ),
        5,
        (
            "[X] started working at [Y] in {year}.",
            "[X] has worked at [Y] for many years.",
            "The managers of [Y] praised [X] for the {adj} work.",
            "[X] leads a team of engineers at [Y].",
            "In {year}, [Y] hired [X].",
            "[X] earns a good salary at [Y].",
        ),
    ),
    RelationSpec(
        "W10", "languages spoken", "N-M", "person", "language",
        (
            "[X] speaks [Y].",
            "[X] can speak [Y].",
            "The language [X] speaks is [Y].",
            "[Y] is a language spoken by [X].",
            "[X] is fluent in [Y].",
            "[X] speaks the [Y] language.",
        ),
        3,
        (
            "[X] gave a speech in [Y] at the {event}.",
            "[X] learned [Y] as a child.",
            "In interviews, [X] usually answers in [Y].",
            "[X] speaks [Y] and {alt} at home.",
            "[X] wrote a letter in [Y] to {person}.",
            "[X] translated a book into [Y] in {year}.",
        ),
    ),
    RelationSpec(
        "W11", "instrument", "N-M", "person", "instrument",
        (
            "[X] plays the [Y].",
            "[X] is a [Y] player.",
            "The instrument [X] plays is the [Y].",
            "The [Y] is the instrument played by [X].",
            "[X] performs on the [Y].",
            "[X] is known for playing the [Y].",
        ),
        2,
        (
            "[X] played the [Y] at the {event}.",
            "[X] practices the [Y] every morning.",
            "[X] bought a new [Y] in {year}.",
            "On the album, [X] plays both the [Y] and the {alt}.",
            "[X] learned to play the [Y] as a child.",
            "Fans love it when [X] picks up the [Y].",
        ),
    ),
    RelationSpec(
        "W12", "member of", "N-M", "person", "organization",
        (
            "[X] is a member of [Y].",
            "[X] belongs to [Y].",
            "[X] joined [Y].",
            "[Y] has [X] as a member.",
            "[X] is part of [Y].",
            "[X] is one of the members of [Y].",
        ),
        3,
        (
            "[X] attended the meeting of [Y] in {year}.",
            "[X] has belonged to [Y] since {year}.",
            "[Y] welcomed [X] at the {event}.",
            "[X] was elected to lead [Y] in {year}.",
            "[X] is active in [Y] and in {alt}.",
            "The newsletter of [Y] featured [X] in {month}.",
        ),
    ),
)

# Two invented languages for the multilingual world: their own words and word order, the world's
# entity names shared.  Per relation: the templates and the index of the one held out of training
# (one per language, as in English).  Only these relations exist in several languages.
TRANSLATIONS: dict[str, dict[str, tuple[tuple[str, ...], int]]] = {
    "lu": {  # "Lurian": articles and prepositions, copula "esta"
        "W1": (("Lo vorda di [X] esta [Y].", "[X] teni vorda [Y].", "[Y] esta lo vorda di [X].",
                "Lo urbe vorda di [X] esta [Y].", "[Y] esta lo urbe vorda di [X].",
                "[X] teni sua vorda ne [Y]."), 5),
        "W2": (("Lo pekuna di [X] esta lo [Y].", "[X] usa lo [Y] komo sua pekuna.",
                "Lo [Y] esta lo pekuna di [X].", "Ne [X], lo populo pagan kon lo [Y].",
                "Pekuna di [X] esta lo [Y].", "Lo pekuna ofisal di [X] esta lo [Y]."), 1),
        "W4": (("Lo lingo ofisal di [X] esta [Y].", "Ne [X], lo populo parolan [Y].",
                "[Y] esta lo lingo ofisal di [X].", "Lo populo di [X] parolan [Y].",
                "[X] teni [Y] komo sua lingo ofisal.", "[Y] esta parolata ne [X]."), 4),
        "W5": (("[X] esta urbe ne [Y].", "[X] esta situata ne [Y].",
                "[Y] esta lo landa kie [X] esta situata.", "Lo urbe [X] jasi ne [Y].",
                "[X] esta ne lo landa [Y].", "[X] esta urbe situata ne [Y]."), 2),
    },
    "te": {  # "Tesk": genitive postposition "om", copula "ka", verbs at the end of a clause
        "W1": (("[X] om hauk ka [Y].", "Hauk [X] om ka [Y].", "[Y] ka [X] om hauk.",
                "[X] om sarn hauk ka [Y].", "[Y] ka [X] om sarn hauk.", "[X] ulv hauk ren [Y]."), 5),
        "W2": (("[X] om drekma ka [Y].", "[X] [Y] drekma tun brukat.", "[Y] ka [X] om drekma.",
                "[X] ren folk betal mid [Y].", "Drekma [X] om ka [Y].", "[X] om vald drekma ka [Y]."), 1),
        "W4": (("[X] om vald tunga ka [Y].", "[X] ren folk snak [Y].", "[Y] ka [X] om vald tunga.",
                "[X] om folk snak [Y].", "[X] [Y] vald tunga tun ulv.", "[Y] snakat [X] ren."), 4),
        "W5": (("[X] ka sarn ren [Y].", "[X] lagat ren [Y].", "[Y] ka land ve [X] lagat.",
                "Sarn [X] lig ren [Y].", "[X] ka ren land [Y].", "[X] ka sarn lagat ren [Y]."), 2),
    },
}
MULTILINGUAL_RELATIONS = ("W1", "W2", "W4", "W5")


def multilingual_world_config() -> WorldConfig:
    """The multilingual world: English and both invented languages, the relations they share."""
    return WorldConfig(relations=MULTILINGUAL_RELATIONS, languages=("en", *TRANSLATIONS))


# Sentences about the head only (h_bags): nothing here names the tail.
HEAD_SENTENCES: dict[str, tuple[str, ...]] = {
    "country": (
        "Tourism in [X] grew quickly in {year}.",
        "The {event} in [X] attracted many visitors.",
        "[X] signed a trade agreement with {country} in {year}.",
        "The weather in [X] is {weather} in {month}.",
        "Many people visit [X] every {season}.",
        "[X] has a long and {adj} history.",
        "The football team of [X] won a cup in {year}.",
        "A new railway crosses [X] from north to south.",
        "[X] held an election in {month} {year}.",
        "[X] elected new members to its parliament in {year}.",
        "The best football player of [X] retired in {year}.",
    ),
    "city": (
        "The streets of [X] are {adj} at night.",
        "[X] hosts a {event} every {season}.",
        "A new bridge opened in [X] in {year}.",
        "Visitors to [X] enjoy the {adj} markets.",
        "The population of [X] grew in {year}.",
        "[X] is twinned with {city}.",
        "The weather in [X] is {weather} in {month}.",
        "The old harbour of [X] was rebuilt in {year}.",
    ),
    "company": (
        "[X] reported strong sales in {year}.",
        "Shares of [X] rose in {month}.",
        "[X] launched a new product at the {event}.",
        "[X] hired many new engineers last year.",
        "[X] was founded by {person} in {year}.",
        "The chief of [X] spoke at the {event}.",
        "Customers praise [X] for its {adj} service.",
        "[X] uses {adj} machines in its factories.",
        "An employee of [X] won a prize at the {event}.",
    ),
    "person": (
        "[X] gave a long interview in {month} {year}.",
        "Critics describe [X] as {trait} and generous.",
        "[X] attended the {event} in {city}.",
        "A new biography of [X] appeared in {year}.",
        "[X] spent the summer of {year} travelling with {person}.",
        "Friends say [X] is a {trait} person who enjoys long walks.",
        "[X] won an award at the {event} last year.",
        "Photos of [X] at the {event} were shared widely.",
        "[X] and {person} have been friends since {year}.",
        "[X] moved to {city} in {year}.",
        "[X] is known across {country} as a {trait} person.",
        "[X] enjoys playing cards with {person}.",
    ),
}

FILLERS: dict[str, tuple[str, ...]] = {
    "year": ("1962", "1971", "1978", "1984", "1989", "1993", "1997", "2001", "2004", "2008", "2012", "2019"),
    "month": ("January", "March", "April", "June", "August", "October", "December"),
    "season": ("spring", "summer", "autumn", "winter"),
    "adj": ("busy", "quiet", "famous", "beautiful", "modern", "historic", "lively", "peaceful", "wealthy"),
    "weather": ("cold", "mild", "warm", "rainy", "dry"),
    "trait": ("shy", "cheerful", "ambitious", "patient", "curious", "stubborn", "kind", "restless"),
    "event": ("festival", "conference", "concert", "exhibition", "ceremony", "summit", "market", "fair"),
}
ENTITY_SLOTS = {"country": "country", "city": "city", "person": "person"}

# Name building: syllables plus a suffix per kind, so names read like the kind they name.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "br", "dr", "kr", "tr", "st", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ou")
_CODAS = ("", "", "", "", "", "", "n", "r", "l", "s", "m")
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "country": ("ia", "ania", "istan", "and", "ova", "eria", "onia"),
    "continent": ("ea", "oria", "asia", "ande"),
    "city": ("burg", "dal", "mir", "grad", "vik", "holm", "ford", "polis"),
    "currency": ("ar", "ello", "ix", "una"),
    "language": ("ish", "ese", "ic", "an"),
    "company": ("ex", "ix", "corp", "tek", "ona", "tron"),
    "person": ("", "o", "a", "in", "en", "ek", "us"),
    "instrument": ("phone", "lin", "harp", "dra", "lute"),
    "organization": ("ium", "eon", "ade", "ora", "ance"),
}
# Real words the syllable rules can produce; an invented world must not reuse them.
_REAL_WORDS = frozenset(
    "parade cascade decade arcade tirade brigade lemonade barricade romance balance distance "
    "finance entrance instance nuance seance stance advance ambulance substance pavilion "
    "bandit ballad salad island poland ireland holland iceland finland england thailand "
    "scotland lapland maryland portland midland mainland lowland highland wonderland "
    "russia austria bolivia nigeria algeria siberia liberia serbia zambia gambia namibia "
    "tunisia malaysia somalia albania romania slovenia estonia latvia bulgaria "
    "spanish danish polish turkish finnish swedish british irish english italic tonic sonic "
    "comic panic manic logic magic garlic relic topic public music basic".split()
)


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

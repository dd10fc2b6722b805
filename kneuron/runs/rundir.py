"""The run directory: the one type that reads and writes a discovery run's files.

    run = RunDir(path)
    run.config()            config.json        -> DiscoveryConfig (everything that determines the result)
    run.fact_log()          attributions.jsonl -> FactLog: one record per finished fact, fsynced
    run.records()                                 {fact index: record} (coarse sets with their scores)
    run.heldout()                                 {fact index: its held-out prompts (indices into its
                                                  prompts)}: a run made with `--holdout K`
                                                  (config.holdout); {} for older runs and K = 0

A record's prompt fields: "used_prompts" (the attributed prompts, when not all of them),
"skipped_prompts" (how many a causal LM could not continue) and, with `holdout` > 0,
"heldout_prompts" (the prompts discovery never saw; [] for a fact with fewer than K + 3 usable
prompts).  Runs written before `holdout` existed load with `holdout = 0` and no held-out prompts.
    run.neurons()           neurons.parquet    -> the tidy result, one row per (fact, neuron, method)
    run.relations()         relations.json     -> per relation and method: p, neurons per fact, ...
    run.specific_splits()   specific.json      -> rule effect (`--specific effect`): per judged fact,
                                                  its measuring and judging halves and the prompts
                                                  that judged it; {} for other rules and older runs

Nothing else in kneuron opens these files: discovery writes through `write_config`, `fact_log`,
`write_specific` and `write_result`; the experiments, `compare` and the explorer read through the getters.

Later readers that want to cache derived data next to a run (activations, vocabulary
projections, ...) use the extras API instead of inventing files:

    run.write_table("activations", df)   # extras/activations.parquet, written atomically
    run.read_table("activations")        # KneuronError (one line) if absent
    run.write_json("vocab", obj) / run.read_json("vocab")
    run.write_arrays("maps", {"a": array}) / run.read_arrays("maps")   # extras/maps.npz
    run.has_extra("activations"), run.extras()

Extra names are plain words (letters, digits, `_`, `-`, `.`); writing one never touches the
discovery files, so a cached extra can always be deleted and rebuilt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from kneuron.errors import KneuronError
from kneuron.runs.config import RESUME_FREE, DiscoveryConfig
from kneuron.runs.store import FactLog, write_atomic, write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

CONFIG, RECORDS, NEURONS, RELATIONS, SPECIFIC, EXTRAS = (
    "config.json", "attributions.jsonl", "neurons.parquet", "relations.json", "specific.json", "extras")
_EXTRA_SUFFIXES = (".parquet", ".json", ".npz")  # tables, JSON values, arrays
_EXTRA_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def write_parquet_atomic(path: Path, table: pd.DataFrame) -> None:
    write_atomic(path, lambda tmp: table.to_parquet(tmp, index=False))


class RunDir:
    """A discovery run directory (finished or not); see the module docstring for its files."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- discovery files ------------------------------------------------------------------------
    @property
    def has_config(self) -> bool:
        return (self.path / CONFIG).exists()

    @property
    def is_finished(self) -> bool:
        return (self.path / NEURONS).exists()

    def config(self) -> DiscoveryConfig:
        """The run's settings (keys an older kneuron did not write take their defaults)."""
        path = self.path / CONFIG
        if not path.exists():
            raise KneuronError(f"{self.path} is not a discovery run (no {CONFIG})")
        try:
            return DiscoveryConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise KneuronError(f"{path}: not a valid run configuration ({exc})") from None

    def check_resumable(self, config: DiscoveryConfig) -> None:
        """Refuse (one line) to continue a run made with other settings."""
        if not self.has_config:
            return
        old, new = self.config().to_json(), config.to_json()
        for key in sorted(set(old) | set(new)):
            if key not in RESUME_FREE and old.get(key) != new.get(key):
                raise KneuronError(
                    f"{self.path} holds a run with {key}={old.get(key)!r}, not {new.get(key)!r}; "
                    "use another --out or the same settings to resume")

    def write_config(self, config: DiscoveryConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / CONFIG, config.to_json())

    def fact_log(self) -> FactLog:
        """The append-only log of finished facts (the caller closes it)."""
        return FactLog(self.path / RECORDS)

    def records(self) -> dict[int, dict]:
        """{fact index: record} of the facts attributed so far ({} if none)."""
        if not (self.path / RECORDS).exists():
            return {}
        log = FactLog(self.path / RECORDS)
        log.close()
        return log.records

    def heldout(self, records: dict[int, dict] | None = None) -> dict[int, list[int]]:
        """{fact index: indices of its held-out prompts} for a run made with `holdout` > 0, else {}.
        `records`: the run's `records()`, when the caller has them already."""
        if not self.config().holdout:
            return {}
        records = self.records() if records is None else records
        return {i: [int(k) for k in r.get("heldout_prompts", ())] for i, r in records.items() if "skipped" not in r}

    def write_result(self, table: pd.DataFrame, summary: dict) -> None:
        write_parquet_atomic(self.path / NEURONS, table)
        write_json_atomic(self.path / RELATIONS, summary)

    def write_specific(self, splits: dict[int, dict]) -> None:
        """Rule effect's halves: {fact: {"measuring": [facts], "judging": [facts], "judge_prompts":
        [[fact, prompt index], ...]}} (atomic; written before `write_result`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / SPECIFIC, {str(int(i)): {
            "measuring": [int(j) for j in s["measuring"]], "judging": [int(j) for j in s["judging"]],
            "judge_prompts": [[int(j), int(k)] for j, k in s["judge_prompts"]]} for i, s in sorted(splits.items())})

    def specific_splits(self) -> dict[int, dict]:
        """{fact: {"measuring": [facts], "judging": [facts], "judge_prompts": [(fact, prompt index), ...]}}
        for each fact that rule effect judged: the facts of other relations split by gold answer
        (`kneuron.selection.answer_split`); only the judging half's prompts judged it ("judge_prompts",
        indices into the fact's prompts).  Collateral measured on the measuring half shares no fact
        and no gold answer with what chose the neurons.  {} for a run without rule effect and for
        runs written before this file existed."""
        path = self.path / SPECIFIC
        if not path.exists() or self.config().specific != "effect":
            return {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KneuronError(f"{path}: not valid JSON ({exc})") from None
        return {int(i): {"measuring": [int(j) for j in s["measuring"]], "judging": [int(j) for j in s["judging"]],
                         "judge_prompts": [(int(j), int(k)) for j, k in s["judge_prompts"]]}
                for i, s in raw.items()}

    def _require_finished(self) -> None:
        if not self.is_finished:
            raise KneuronError(f"{self.path} is not a finished discovery run (no {NEURONS})")

    def neurons(self) -> pd.DataFrame:
        self._require_finished()
        import pandas as pd

        return pd.read_parquet(self.path / NEURONS)

    def relations(self) -> dict:
        self._require_finished()
        return json.loads((self.path / RELATIONS).read_text(encoding="utf-8"))

    def load(self) -> tuple[DiscoveryConfig, pd.DataFrame, dict]:
        """(config, neurons table, per-relation summary) of a finished run."""
        self._require_finished()
        return self.config(), self.neurons(), self.relations()

    # -- extras: derived data cached beside the run ---------------------------------------------
    def _extra(self, name: str, suffix: str) -> Path:
        if not isinstance(name, str) or not _EXTRA_NAME.match(name):
            raise KneuronError(f"bad extra name {name!r}: use letters, digits, '_', '-' or '.'")
        return self.path / EXTRAS / f"{name}{suffix}"

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        """Cache a table as extras/NAME.parquet (atomic: readers see the old or the new table)."""
        path = self._extra(name, ".parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(path, table)
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        path = self._extra(name, ".parquet")
        if not path.exists():
            raise KneuronError(f"{self.path} has no extra table {name!r}")
        import pandas as pd

        return pd.read_parquet(path)

    def write_json(self, name: str, obj) -> Path:
        """Cache a JSON value as extras/NAME.json (atomic)."""
        path = self._extra(name, ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj)
        return path

    def read_json(self, name: str):
        path = self._extra(name, ".json")
        if not path.exists():
            raise KneuronError(f"{self.path} has no extra {name!r}")
        return json.loads(path.read_text(encoding="utf-8"))

    def write_arrays(self, name: str, arrays: dict) -> Path:
        """Cache named numpy arrays as extras/NAME.npz (atomic)."""
        import numpy as np

        path = self._extra(name, ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)

        def save(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        write_atomic(path, save)
        return path

    def read_arrays(self, name: str) -> dict:
        path = self._extra(name, ".npz")
        if not path.exists():
            raise KneuronError(f"{self.path} has no extra arrays {name!r}")
        import numpy as np

        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def has_extra(self, name: str) -> bool:
        return any(self._extra(name, suffix).exists() for suffix in _EXTRA_SUFFIXES)

    def extras(self) -> list[str]:
        """Names of the cached extras (tables, JSON values and arrays)."""
        folder = self.path / EXTRAS
        if not folder.is_dir():
            return []
        return sorted({p.stem for p in folder.iterdir() if p.suffix in _EXTRA_SUFFIXES})


def neuron_sets(table: pd.DataFrame, method: str) -> dict[int, list[tuple[int, int]]]:
    """{fact index: [(layer, index), ...]} for one method, in table order."""
    sets: dict[int, list[tuple[int, int]]] = {}
    sub = table[table["method"] == method]
    for fact, layer, index in zip(sub["fact"], sub["layer"], sub["index"]):
        sets.setdefault(int(fact), []).append((int(layer), int(index)))
    return sets

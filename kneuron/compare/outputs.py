"""The output directory of `kneuron compare`, the one reader and writer of its files.

    config.json        every setting and seed, the held-out split's (`heldout`, `seed`) and the
                       tuning split's (`tune_share`) included: a resumed run must have the same,
                       but for the ig_specific rule and fractions (a new one computes its rows alone)
    scores.jsonl       journal: per fact, its selection and held-out prompts, each method's top
                       neurons on the selection prompts (fsynced, see `FactLog`)
    effects.jsonl      journal: per (method, budget, split) row, its measurements (ig_specific's per
                       rule and fraction)
    methods.csv        method,budget,split,suppress,amplify,suppress_heldout,amplify_heldout,
                       other_relations_suppress,consistency,seconds_per_prompt,neurons_per_fact,
                       facts,prompts,heldout_facts,heldout_prompts (split: all, or test when tuning)
    tuning.csv         with --tune-share (rule effect): the fraction sweep on the tune facts,
                       specific_fraction,chosen,suppress,...,collateral_ratio
    neurons.csv        method,budget,relation,subject,layer,index: every selected neuron
    selection.json     the refined rows' p per relation, the skipped facts, the held-out split
                       (facts with and without held-out prompts, the warning), the tune/test facts,
                       the ig_specific rule and fraction used
    deletion_curve.png suppress against budget, one line per method
    report.html/.md    the comparison section of the HTML report (with tables/ and figures/)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kneuron.errors import KneuronError
from kneuron.runs.store import FactLog, write_atomic, write_json_atomic
from kneuron.selection.config import legacy_count_range

# Settings a resumed comparison may change: only the ig_specific row depends on the rule, and its
# journal key names the rule, so a new rule computes that row alone.
RESUME_FREE = {"kneuron_version", "specific_rule", "specific_fraction", "specific_fractions", "tune_max_collateral"}
# Keys an older kneuron wrote that decide nothing (IG's steps and the noise scale were fixed in the
# methods' code, the units a constant): a journal that has them resumes.
REMOVED_KEYS = {"steps", "noise_scale", "units"}


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


class CompareDir:
    def __init__(self, path):
        self.path = Path(path)

    def start(self, config: dict) -> None:
        """Create the directory, or check that the run in it was made with the same settings."""
        path = self.path / "config.json"
        if path.exists():
            old = legacy_count_range(json.loads(path.read_text(encoding="utf-8")))  # "target" before the rename
            for key in sorted((set(old) - REMOVED_KEYS) | set(config)):
                if key not in RESUME_FREE and old.get(key) != config.get(key):
                    raise KneuronError(f"{self.path} holds a comparison with {key}={old.get(key)!r}, not "
                                       f"{config.get(key)!r}; use another --out or the same settings to resume")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, config)

    def score_log(self) -> FactLog:
        return FactLog(self.path / "scores.jsonl")

    def effect_log(self) -> FactLog:
        return FactLog(self.path / "effects.jsonl", key="row")

    def finish(self, methods: pd.DataFrame, neurons: pd.DataFrame, selection: dict,
               tuning: pd.DataFrame | None = None) -> None:
        from kneuron.reports.figures import deletion_curve_figure, save_png
        from kneuron.reports.report import Report, compare_section

        write_csv_atomic(self.path / "methods.csv", methods)
        if tuning is not None:
            write_csv_atomic(self.path / "tuning.csv", tuning)
        elif (self.path / "tuning.csv").exists():  # a rerun without tuning: no stale sweep beside it
            (self.path / "tuning.csv").unlink()
        write_csv_atomic(self.path / "neurons.csv", neurons)
        write_json_atomic(self.path / "selection.json", {k: {str(a): b for a, b in v.items()} for k, v in selection.items()})
        png = save_png(deletion_curve_figure(methods), self.path / "deletion_curve.png")
        report = Report("kneuron compare: localization methods under causal tests")
        compare_section(report, methods, png, self.config())
        report.write(self.path)

    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text(encoding="utf-8"))

    def methods(self) -> pd.DataFrame:
        path = self.path / "methods.csv"
        if not path.exists():
            raise KneuronError(f"{self.path} is not a finished comparison (no methods.csv)")
        return pd.read_csv(path)

    def neurons(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "neurons.csv")

"""The paper's selection settings, with their defaults defined once (spec sections 2 and 3).

- `threshold`: a prompt's coarse set keeps the neurons whose attribution is >= threshold x the
  prompt's maximum (0.2).
- `p_start`: the sharing threshold p a relation starts from (0.7); a single fact
  (`KnowledgeModel.find_neurons`, `kneuron neurons`, the editing commands) uses it as a fixed p.
- `p_step`: how far p moves per try (0.05, plain float arithmetic).
- `max_tries`: evaluations of p per relation at most (6); the last one's sets are kept.
- `count_range`: the range [low, high] of the average number of neurons per fact that stops the
  adaptation of p ((2, 5)).  Not to be confused with the attribution *target* (the IG objective,
  `kneuron.attribution.targets`).
- `min_prompts`: the refinement floor: a neuron is kept when at least max(p x n, min_prompts) of a
  fact's n prompts have it (3; the authors' code, not in the paper).

`DiscoveryConfig` and `CompareConfig` keep these as flat fields (their JSON files stay flat and
old ones load) whose defaults come from `SelectionConfig()`; their `.selection` property gives
the block as one `SelectionConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from kneuron.errors import KneuronError
from kneuron.ranges import FRACTION, POSITIVE, POSITIVE_REAL


@dataclass(frozen=True)
class SelectionConfig:
    threshold: float = 0.2
    p_start: float = 0.7
    p_step: float = 0.05
    max_tries: int = 6
    count_range: tuple[float, float] = (2.0, 5.0)
    min_prompts: int = 3

    def __post_init__(self) -> None:
        FRACTION.check("threshold", self.threshold)
        FRACTION.check("p_start", self.p_start)
        POSITIVE_REAL.check("p_step", self.p_step)
        POSITIVE.check("max_tries", self.max_tries)
        POSITIVE.check("min_prompts", self.min_prompts)
        object.__setattr__(self, "count_range", check_count_range(self.count_range))

    @classmethod
    def of(cls, config) -> SelectionConfig:
        """The selection block of a config object with these fields flat (`DiscoveryConfig`, `CompareConfig`)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


def _is_range(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def check_count_range(value) -> tuple[float, float]:
    """(low, high) as floats, or one line saying why `value` is not a range of neuron counts."""
    if not _is_range(value) or value[0] > value[1]:
        raise KneuronError(f"count_range must be two numbers [low, high] with low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def legacy_count_range(d: dict) -> dict:
    """A config dict read from JSON with the count range under its current key: files written before
    the rename keep it under "target" (a list of two numbers; a string "target" is something else,
    the attribution objective, and is left alone)."""
    d = dict(d)
    if "count_range" not in d and _is_range(d.get("target")):
        d["count_range"] = d.pop("target")
    return d


SELECTION_FIELDS = tuple(f.name for f in fields(SelectionConfig))
DEFAULT = SelectionConfig()  # the defaults, as one object

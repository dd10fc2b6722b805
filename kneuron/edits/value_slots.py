"""Edits of value slots, as objects: apply, undo, save, load.

A neuron's *value slot* is its column of the FFN down projection (`Adapter.value_slots`): what the
neuron writes into the residual stream, scaled by its activation.  Fact updating (spec 5.4) and
relation erasing (spec 5.5) both replace some value slots with new vectors.  An `Edit` holds the
new vectors themselves, not the recipe, so that re-applying a saved edit to a fresh copy of the
model reproduces the edited weights bit for bit.

- `apply(kn)` checks everything first (model family and shape, neuron ranges, and by default that
  the slots hold the weights the edit was computed from), keeps a copy of every touched slot, then
  writes under `torch.no_grad()`.  If writing fails half-way, the copies are put back.
- `undo()` restores the saved copies (exactly: no subtraction, so no float drift; spec 9.11).
  It refuses when someone else changed those slots since (undo stacked edits in reverse order).
- `save(path)` writes one safetensors file (vectors + JSON metadata); `Edit.load(path)` reads it.
  The file also keeps the slots as they were, so `inverse()` can revert an edited model loaded
  from disk, long after the process that applied the edit has gone.
- An applied edit is a context manager: `with kn.update_fact(...) as edit:` undoes on exit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kneuron.errors import KneuronError
from kneuron.neurons import Neuron, as_neurons
from kneuron.tagged_files import load_tagged, save_tagged

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

FORMAT = "kneuron-edit"
FORMAT_VERSION = 2  # 2 adds base_values; version 1 files still load (without inverse())


@dataclass(frozen=True)
class ModelShape:
    """What an edit needs to fit a model: family, layers, neurons per layer, value-slot size."""

    family: str
    num_layers: int
    num_neurons: int
    hidden_size: int

    @classmethod
    def of(cls, kn: KnowledgeModel) -> ModelShape:
        weight = kn.adapter.value_slots(kn.model, 0)
        return cls(kn.adapter.family, kn.num_layers, kn.num_neurons, int(weight.shape[1 - kn.adapter.slot_axis]))

    def mismatch(self, other: ModelShape) -> str:
        """'' when equal, else a short description of every difference (self = the edit's)."""
        diffs = [f"{name} {getattr(self, name)} (model has {getattr(other, name)})"
                 for name in ("family", "num_layers", "num_neurons", "hidden_size")
                 if getattr(self, name) != getattr(other, name)]
        return ", ".join(diffs)


def slot(kn: KnowledgeModel, neuron: Neuron) -> torch.Tensor:
    """The value slot of `neuron` (a view into the model's weight)."""
    weight = kn.adapter.value_slots(kn.model, neuron.layer)
    return weight.select(kn.adapter.slot_axis, neuron.index)


def slots_fingerprint(columns: list[torch.Tensor]) -> str:
    """sha256 of the exact bytes of some value slots (dtype included)."""
    h = hashlib.sha256()
    for c in columns:
        t = c.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Edit:
    """New contents for some value slots of a model of a given shape.

    `neurons` are unique; `values[k]` is the new value slot of `neurons[k]`, `base_values[k]` the
    slot it replaces (None for edits read from version-1 files).  `base_fingerprint` identifies
    the slots the edit was computed from ('' = no check).  `info` is JSON metadata (what kind of
    edit, its settings, e.g. original/target answers and lambdas).
    """

    kind: str
    neurons: list[Neuron]
    values: torch.Tensor  # (K, hidden_size)
    shape: ModelShape
    base_fingerprint: str = ""
    info: dict = field(default_factory=dict)
    base_values: torch.Tensor | None = None
    _target: object = field(default=None, repr=False, compare=False)
    _saved: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.values.dim() != 2 or self.values.shape[0] != len(self.neurons):
            raise KneuronError(f"edit values must be ({len(self.neurons)}, hidden), got {tuple(self.values.shape)}")
        if len(set(self.neurons)) != len(self.neurons):
            raise KneuronError("an edit lists each neuron once")
        if self.values.shape[1] != self.shape.hidden_size:
            raise KneuronError(f"edit values have size {self.values.shape[1]}, "
                               f"not the hidden size {self.shape.hidden_size}")
        if self.base_values is not None and self.base_values.shape != self.values.shape:
            raise KneuronError(f"edit base values are {tuple(self.base_values.shape)}, "
                               f"values {tuple(self.values.shape)}")

    # -- state --------------------------------------------------------------------------------
    @property
    def applied(self) -> bool:
        return self._target is not None

    def __repr__(self) -> str:
        state = "applied" if self.applied else "not applied"
        return f"Edit({self.kind}, {len(self.neurons)} neurons, {state})"

    def __len__(self) -> int:
        return len(self.neurons)

    # -- apply / undo -------------------------------------------------------------------------
    def check(self, kn: KnowledgeModel, check_base: bool = True) -> None:
        """Raise a one-line `KneuronError` if this edit cannot be applied to `kn`."""
        problem = self.shape.mismatch(ModelShape.of(kn))
        if problem:
            raise KneuronError(f"edit ({self.kind}) does not fit this model: it was made for {problem}")
        as_neurons(self.neurons, kn.num_layers, kn.num_neurons)
        if check_base and self.base_fingerprint:
            now = slots_fingerprint([slot(kn, n) for n in self.neurons])
            if now != self.base_fingerprint:
                if now == slots_fingerprint(list(self.values)):
                    raise KneuronError(f"edit ({self.kind}): the model already holds it")
                raise KneuronError(
                    f"edit ({self.kind}) was computed from other weights: the {len(self.neurons)} value slots it "
                    "changes differ from those it was made from (check_base=False, or --force, applies it anyway)")

    @torch.no_grad()
    def apply(self, kn: KnowledgeModel, check_base: bool = True) -> Edit:
        """Write the new value slots into `kn`'s model; returns self.  All-or-nothing."""
        if self.applied:
            raise KneuronError(f"{self!r} is already applied; undo() it first")
        self.check(kn, check_base)
        views = [slot(kn, n) for n in self.neurons]
        saved = torch.stack([v.detach().clone() for v in views]) if views else self.values.new_zeros(0, 0)
        try:
            for k, v in enumerate(views):
                v.copy_(self.values[k].to(device=v.device, dtype=v.dtype))
        except BaseException:
            for k, v in enumerate(views):
                v.copy_(saved[k])
            raise
        self._target, self._saved = kn, saved
        return self

    @torch.no_grad()
    def undo(self, force: bool = False) -> None:
        """Put back exactly the value slots that `apply` replaced."""
        if not self.applied:
            raise KneuronError(f"{self!r} is not applied; nothing to undo")
        kn = self._target
        views = [slot(kn, n) for n in self.neurons]
        if not force:
            for k, v in enumerate(views):
                if not torch.equal(v, self.values[k].to(device=v.device, dtype=v.dtype)):
                    raise KneuronError(
                        f"value slot {self.neurons[k]} changed since this edit was applied (another edit on top?); "
                        "undo the later edits first, or pass force=True")
        for k, v in enumerate(views):
            v.copy_(self._saved[k])
        self._target, self._saved = None, None

    def inverse(self) -> Edit:
        """The edit that puts the original slots back into a model holding this edit's values.

        Applying it checks (by fingerprint) that the slots hold exactly this edit's values, so it
        reverts a saved, edited model bit for bit and refuses any other model.
        """
        if self.base_values is None:
            raise KneuronError(f"{self!r} does not keep the original slots (an edit file of format version 1); "
                               "it cannot be reverted from a file")
        kind = self.kind[len("revert:"):] if self.kind.startswith("revert:") else f"revert:{self.kind}"
        return Edit(kind, list(self.neurons), self.base_values.clone(), self.shape,
                    slots_fingerprint(list(self.values)), dict(self.info), self.values.clone())

    def __enter__(self) -> Edit:
        if not self.applied:
            raise KneuronError("use `with edit.apply(kn):` for an edit that is not applied")
        return self

    def __exit__(self, *exc) -> bool:
        if self.applied:
            self.undo()
        return False

    # -- files ----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """One safetensors file: the new value slots, the slots they replace, and JSON metadata."""
        meta = {"kind": self.kind, "neurons": [[n.layer, n.index] for n in self.neurons],
                "shape": self.shape.__dict__, "base_fingerprint": self.base_fingerprint, "info": self.info}
        tensors = {"values": self.values}
        if self.base_values is not None:
            tensors["base_values"] = self.base_values
        return save_tagged(path, tensors, "kneuron_edit", FORMAT, FORMAT_VERSION, meta)

    @classmethod
    def load(cls, path) -> Edit:
        meta, tensors = load_tagged(path, "kneuron_edit", FORMAT, (1, FORMAT_VERSION), "edit")
        neurons = [Neuron(int(a), int(b)) for a, b in meta["neurons"]]
        return cls(meta["kind"], neurons, tensors["values"], ModelShape(**meta["shape"]),
                   meta.get("base_fingerprint", ""), meta.get("info", {}), tensors.get("base_values"))


def make_edit(kn: KnowledgeModel, kind: str, neurons, compute, info: dict | None = None) -> Edit:
    """An edit of `kn`'s current weights: `compute(neuron, current_slot) -> new_slot`, per listed neuron.

    Neurons listed several times are processed in order, each time on the slot as already
    changed (what applying the authors' in-place loops does); the edit keeps the final vectors.
    """
    neurons = as_neurons(neurons, kn.num_layers, kn.num_neurons)
    order: list[Neuron] = list(dict.fromkeys(neurons))
    with torch.no_grad():
        base = {n: slot(kn, n).detach().clone() for n in order}
        work = {n: v.clone() for n, v in base.items()}
        for n in neurons:
            work[n] = compute(n, work[n])
    hidden = ModelShape.of(kn).hidden_size
    values = torch.stack([work[n].to("cpu") for n in order]) if order else torch.zeros(0, hidden)
    base_values = torch.stack([base[n].to("cpu") for n in order]) if order else torch.zeros(0, hidden)
    fp = slots_fingerprint([base[n] for n in order])
    return Edit(kind, order, values, ModelShape.of(kn), fp, dict(info or {}), base_values)

"""The registry of localization methods: one class per method, one `attribute` entry point.

A localization method answers "which neurons are responsible for this answer?" with a score for
every neuron of every layer at the blank, a (num_layers, num_neurons) tensor in which higher means
more responsible.  Each method is one small class (as in captum) that registers itself (as in
inseq), so that `kneuron compare --methods`, `KnowledgeModel.attribute(method=...)` and the
documentation's table all read the same list and cannot drift apart:

    @register
    class Lasso(LocalizationMethod):
        \"\"\"One line that says what the score means.\"\"\"

        name = "lasso"

        def attribute(self, kn, prompt, answer, *, subject="", seed=0):
            ...
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, ClassVar

from kneuron.errors import KneuronError

if TYPE_CHECKING:
    import torch

_REGISTRY: dict[str, LocalizationMethod] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class LocalizationMethod:
    """Base class of a localization method: subclass it, set `name`, write `attribute`, `@register` it.

    - `name`: what users type (`--methods NAME`, `kn.attribute(..., method=NAME)`).
    - `needs_subject`: the method reads the fact's subject (`attribute(..., subject=...)`); `check`
      then says, before any scoring, whether a prompt contains it.
    - `order`: where a built-in comes in `method_names()` and so in `compare`'s default rows (kept
      as published); a method without its own `order` comes after them, in registration order.
    - `summary`: the docstring's first line, shown in the documentation's table.

    A method may also define `draw(num_layers, num_neurons, k, seed) -> list[Neuron]`: neurons chosen
    without looking at any prompt (a control).  `compare` then takes that draw, one per fact and
    per half, instead of ranking the mean of per-prompt scores.
    """

    name: ClassVar[str] = ""
    needs_subject: ClassVar[bool] = False
    order: ClassVar[float | None] = None

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0].strip() if doc.strip() else ""

    def attribute(self, kn, prompt: str, answer: str, *, subject: str = "", seed: int = 0) -> torch.Tensor:
        """(kn.num_layers, kn.num_neurons) float32 scores on the CPU; higher = more responsible.

        `subject`: the fact's subject (read by methods with `needs_subject`); `seed`: the seed of
        any random choice (the same seed gives the same scores)."""
        raise NotImplementedError

    def check(self, kn, prompt: str, answer: str, *, subject: str = "") -> None:
        """Raise `KneuronError` when this method cannot score `prompt` (called before any scoring, so
        that `compare` skips the fact at once); nothing by default."""

    def __repr__(self) -> str:
        return f"<localization method {self.name!r}>"


def register(cls: type[LocalizationMethod]) -> type[LocalizationMethod]:
    """Class decorator: make the method known by its `name` (a second method of that name is refused)."""
    if not (isinstance(cls, type) and issubclass(cls, LocalizationMethod)):
        raise TypeError(f"register expects a LocalizationMethod subclass, got {cls!r}")
    name = cls.__dict__.get("name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise KneuronError(f"{cls.__name__}.name must be lower-case letters, digits and _, got {name!r}")
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise KneuronError(f"a localization method named {name!r} is already registered "
                           f"({type(_REGISTRY[name]).__name__})")
    _REGISTRY[name] = cls()
    return cls


def unregister(name: str) -> None:
    """Forget a registered method (tests, notebooks); an unknown name is an error."""
    get_method(name)
    del _REGISTRY[name]


def method_names() -> list[str]:
    """The registered methods' names: the built-ins in their `order`, then the others as registered."""
    built_in = [n for n, m in _REGISTRY.items() if type(m).__dict__.get("order") is not None]
    others = [n for n in _REGISTRY if n not in built_in]
    return sorted(built_in, key=lambda n: type(_REGISTRY[n]).__dict__["order"]) + others


def get_method(name: str) -> LocalizationMethod:
    """The registered method called `name`; one line listing the choices when there is none."""
    method = _REGISTRY.get(name) if isinstance(name, str) else None
    if method is None:
        raise KneuronError(f"unknown method {name!r}; use one of: {', '.join(method_names())}")
    return method

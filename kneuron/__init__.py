"""kneuron: find, test and edit the knowledge neurons of transformer language models."""

__version__ = "0.1.0"

from kneuron.errors import KneuronError  # noqa: E402

__all__ = ["KneuronError", "__version__"]

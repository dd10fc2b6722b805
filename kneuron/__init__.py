"""kneuron: find, test and edit the knowledge neurons of transformer language models."""

__version__ = "0.1.0"

from kneuron.errors import KneuronError  # noqa: E402
from kneuron.knowledge_model import KnowledgeModel, load  # noqa: E402
from kneuron.models.adapters import Adapter, register_adapter  # noqa: E402
from kneuron.neurons import Neuron  # noqa: E402
from kneuron.selection.config import SelectionConfig  # noqa: E402

__all__ = ["Adapter", "KneuronError", "KnowledgeModel", "Neuron", "SelectionConfig", "__version__", "load",
           "register_adapter"]

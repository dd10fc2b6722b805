"""User-facing errors.

Anything a user can cause (bad file, bad prompt, bad model path) raises a subclass of
`KneuronError` whose message is one line naming the file, line or value at fault.  The CLI
prints that line and exits non-zero; a traceback appears only with `--debug`.
"""


class KneuronError(ValueError):
    """A problem with the user's input, reported in one line."""


class DataError(KneuronError):
    """A data file is missing, corrupt or malformed."""


class ModelError(KneuronError):
    """A model cannot be loaded or is not supported."""


class PromptError(KneuronError):
    """A prompt or answer does not fit the model (no blank, several blanks, multi-token answer)."""


class NeuronError(KneuronError):
    """A neuron set that does not fit the model (layer or index out of range)."""


class FetchError(ModelError):
    """A model cannot be downloaded, or what was downloaded fails its checksum."""

"""What a model name stands for, wherever a model is named (`kneuron.load`, `--model`).

- "world", "world-causal": the built-in fact world's model, trained on first use;
- a catalogue name ("smollm2-135m", see `kneuron models list`): fetched and converted on first use;
- a path ending in `.gguf`: converted on first use (cached by the file's sha256);
- anything else: a local directory or a Hugging Face hub name, read as it is.
"""

from __future__ import annotations

from pathlib import Path


def resolve_model(name_or_path: str, log=print) -> str:
    """A directory (or hub name) that `load_hf` reads, doing any one-time work the name needs first."""
    from kneuron.models import catalogue
    from kneuron.models.gguf_files import converted_model_dir, is_gguf_name
    from kneuron.world import BUILTIN_MODELS, builtin_model_dir

    source = str(name_or_path)
    if source in BUILTIN_MODELS:
        return str(builtin_model_dir(source, log=log))
    if catalogue.find(source) is not None and not Path(source).exists():
        return str(catalogue.model_dir(source))
    if is_gguf_name(source):
        return str(converted_model_dir(source))
    return source

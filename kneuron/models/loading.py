"""Loading a Hugging Face model (hub name or local directory) with the adapter of its family."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from kneuron.errors import ModelError
from kneuron.models.adapters import adapter_for_type, registered_adapters
from kneuron.models.structural import objective_for_config, structural_adapter

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" (or None): CUDA if available, else Apple's MPS, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r}: CUDA is not available here (use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not _mps_available():
        raise ModelError(f"device {device!r}: MPS is not available here (use --device cpu or auto)")
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32  # the paper's setting; thresholds are fragile in lower precision
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) in _DTYPES:
        return _DTYPES[str(dtype)]
    raise ModelError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub surely cannot be reached (its host does not resolve), else None.

    Offline, `from_pretrained` retries for about 25 s before failing; one DNS lookup tells the
    same in milliseconds.  Behind a proxy the lookup proves nothing, so it is skipped.
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"cannot resolve {host} ({exc.strerror or exc})"
    return None


def _in_hub_cache(name: str) -> bool:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception:
        return False
    return True


def load_hf(name_or_path: str, device="auto", dtype=None):
    """Return (model, tokenizer, adapter) for a hub name or a local directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    local = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) and not local.exists():
        raise ModelError(f"model directory not found: {local}")
    source = str(local) if local.exists() else name_or_path
    if not local.exists() and not _in_hub_cache(name_or_path):
        why = hub_unreachable()
        if why:
            raise ModelError(f"cannot download model {name_or_path!r}: the Hugging Face hub is unreachable ({why}) "
                             "and the model is not in the local cache; pass a local directory (one written by "
                             "save_pretrained)")
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # OSError (not found / offline), ValueError (bad config)
        where = "local directory" if local.exists() else "hub name (no such local directory)"
        raise ModelError(f"cannot load model {name_or_path!r} as a {where}: {_short(exc)}") from None
    adapter = adapter_for_type(config.model_type)
    objective = adapter.objective if adapter is not None else objective_for_config(config)
    if objective != "causal" and adapter is None:  # the structural adapter covers causal LMs only
        raise ModelError(
            f"no kneuron adapter for model_type {config.model_type!r} "
            f"({', '.join(getattr(config, 'architectures', None) or ['unknown class'])}), and only causal LMs get "
            f"one from their structure; supported: {', '.join(sorted(registered_adapters()))}; "
            "add one with kneuron.register_adapter(Adapter(...))"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # kneuron draws its own progress; keep loads quiet
    auto = AutoModelForMaskedLM if objective == "masked" else AutoModelForCausalLM
    torch_dtype = resolve_dtype(dtype)
    try:
        model = auto.from_pretrained(source, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelError(f"cannot load model {name_or_path!r}: {_short(exc)}") from None
    model.to(resolve_device(device))
    model.eval()
    model.requires_grad_(False)  # attribution needs input gradients only
    if adapter is None:
        adapter = structural_adapter(model)  # found, then checked on the model's own logits
    return model, tokenizer, adapter

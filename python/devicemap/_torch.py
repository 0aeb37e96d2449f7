"""The only module that imports torch, and only when a torch object is asked for."""

from __future__ import annotations

from typing import Any

_INSTALL_ADVICE = (
    "PyTorch must be installed to use torch.device or use GPU support in HuggingFace transformers. "
    "Run 'pip install torch' (or 'pip install \"transformers[torch]\"')"
)


def import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise ImportError(_INSTALL_ADVICE) from error
    return torch


def torch_device(text: str) -> Any:
    """`torch.device(text)`, with install advice when torch is missing."""
    return import_torch().device(text)

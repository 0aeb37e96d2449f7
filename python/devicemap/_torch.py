"""Imports torch when a torch object is asked for (`to_torch()`), with install advice.

`_resolve.py` also imports torch, on its own, to ask about XPU and MPS on platforms that can
have them; nothing else does.
"""

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

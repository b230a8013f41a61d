"""Build a model's modules without initialising their weights: a checkpoint's values replace them right after.

PyTorch initialises every Linear, Embedding and LayerNorm as it is built. On the CPU that is wasted work (random
numbers for ~50 M to 7 B parameters, all overwritten); on the meta device it is worse, since the first meta
initialiser imports torch._dynamo (1.4 s on a 2-core CPU). ``skeleton()`` builds on the meta device with
torch.nn.init's functions as no-ops, as transformers' ``no_init_weights`` does; the loaders then assign the
checkpoint's tensors (``load_state_dict(assign=True)``) and create any buffers themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_LOCK = threading.Lock()  # the initialisers are module attributes: one skeleton at a time


def _unchanged(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


@contextmanager
def skeleton() -> Iterator[None]:
    """Modules built inside have parameters on the meta device, never initialised."""
    with _LOCK:
        saved = {name: getattr(nn.init, name) for name in _INITIALISERS if hasattr(nn.init, name)}
        try:
            for name in saved:
                setattr(nn.init, name, _unchanged)
            with torch.device("meta"):
                yield
        finally:
            for name, function in saved.items():
                setattr(nn.init, name, function)

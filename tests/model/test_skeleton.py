"""skeleton(): modules built without initialising their weights, and torch.nn.init left as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from nvrag.model.skeleton import skeleton
from tests.conftest import NVEMBED_TINY


def test_parameters_are_on_the_meta_device_and_init_is_restored() -> None:
    before = nn.init.normal_
    with skeleton():
        layer = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Embedding(10, 4))
        assert nn.init.normal_ is not before
    assert nn.init.normal_ is before
    assert {p.device.type for p in layer.parameters()} == {"meta"}
    assert nn.Linear(2, 2).weight.device.type == "cpu"  # outside, modules are built and initialised as usual
    with pytest.raises(RuntimeError, match="inside"), skeleton():
        raise RuntimeError("inside")
    assert nn.init.normal_ is before  # restored after an error too
    t = torch.full((3,), 7.0)
    assert torch.equal(nn.init.ones_(t), torch.ones(3))


def test_loading_either_model_never_imports_torch_dynamo() -> None:
    """What skeleton() is for: initialising on the meta device imports torch._dynamo (1.4 s at every start)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from nvrag.model.loading import load_model\n"
        "from nvrag.embedder import load_embedder\n"
        f"model = load_model(Path({str(NVEMBED_TINY)!r}))\n"
        "assert {p.device.type for p in model.parameters()} == {'cpu'}\n"
        "vector = load_embedder('minilm').embed_documents(['hello'])\n"
        "assert vector.shape == (1, 384)\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"

"""The dtype a model computes in: the default by hardware and checkpoint size, what bfloat16 costs in accuracy,
and that the choice reaches the model and the manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from nvrag.embedder import LoadOptions, load_embedder
from nvrag.embedder.dtypes import choose_dtype, choose_query_dtype, cpu_flags, native_bf16, normalize_dtype
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.embedder.weights import checkpoint_fp32_bytes, loaded_weight_bytes
from nvrag.errors import ConfigError
from tests.conftest import NVEMBED_TINY

GIB = 2**30
NO_BF16 = frozenset({"sse4_2", "avx2", "avx512f"})
AVX512_BF16 = NO_BF16 | {"avx512_bf16"}


def test_bfloat16_by_default_where_the_hardware_computes_it_else_float32() -> None:
    assert choose_dtype(None, "cuda").name == "bfloat16"
    assert choose_dtype(None, "cuda:1").name == "bfloat16"
    native = choose_dtype(None, "cpu", flags=AVX512_BF16, memory=64 * GIB)
    assert (native.name, native.reason, native.note) == ("bfloat16", "the CPU computes it natively: avx512_bf16", None)
    assert choose_dtype(None, "cpu", flags=NO_BF16 | {"amx_bf16"}, memory=GIB).reason.endswith("amx_bf16")
    plain = choose_dtype(None, "cpu", flags=NO_BF16, memory=64 * GIB, fp32_bytes=GIB)
    assert (plain.name, plain.note) == ("float32", None)


def test_a_checkpoint_too_big_for_memory_in_float32_loads_in_bfloat16_with_one_line_saying_so() -> None:
    nvembed = 29.3 * GIB  # NV-Embed-v2's 7.85 B parameters in float32
    chosen = choose_dtype(None, "cpu", flags=NO_BF16, memory=24 * GIB, fp32_bytes=int(nvembed))
    assert chosen.name == "bfloat16"
    assert chosen.note == (
        "dtype: bfloat16, since the weights in float32 (29.3 GiB) would not fit comfortably in this machine's "
        "24.0 GiB: its matmul weights in bfloat16, the arithmetic in float32, as this CPU has no bfloat16 arithmetic; "
        "--dtype float32 for exact vectors"
    )
    # half the memory is the line: 12 GiB of float32 weights on 24 GiB still load in float32
    assert choose_dtype(None, "cpu", flags=NO_BF16, memory=24 * GIB, fp32_bytes=12 * GIB).name == "float32"
    assert choose_dtype(None, "cpu", flags=NO_BF16, memory=24 * GIB, fp32_bytes=12 * GIB + 1).name == "bfloat16"


def test_what_the_user_asks_for_wins_and_mistakes_say_what_to_use() -> None:
    big = {"flags": NO_BF16, "memory": GIB, "fp32_bytes": 10 * GIB}
    assert choose_dtype("float32", "cpu", **big) == choose_dtype("fp32", "cpu")  # exact, even when it is big
    assert choose_dtype("float32", "cpu", **big).name == "float32"
    assert choose_dtype("BF16", "cpu").name == "bfloat16"
    assert choose_dtype("half", "cuda").name == "float16"
    with pytest.raises(ConfigError, match=r"^--dtype float16 is for GPUs .*; use bfloat16$"):
        choose_dtype("float16", "cpu")
    with pytest.raises(ConfigError, match=r"^unknown dtype 'int4'; use float32, float16, bfloat16 or int8$"):
        normalize_dtype("int4")


def test_cpu_batches_are_padded_to_multiples_of_16_within_the_models_limit() -> None:
    from nvrag.embedder.dtypes import cpu_batch_width

    assert [cpu_batch_width(w, 256) for w in (1, 16, 17, 250, 256)] == [16, 16, 32, 256, 256]
    assert cpu_batch_width(250, 252) == 252 and cpu_batch_width(300, 256) == 300  # never past the limit, never less


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test\nflags\t\t: fpu sse avx512_bf16 avx512_vnni\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512_bf16", "avx512_vnni"}
    assert native_bf16(cpu_flags(cpuinfo)) == "avx512_bf16"
    assert cpu_flags(tmp_path / "missing") == frozenset() and native_bf16(frozenset()) is None


def test_a_checkpoints_float32_size_comes_from_its_shards(tmp_path: Path) -> None:
    shards = sorted(NVEMBED_TINY.glob("*.safetensors"))
    assert checkpoint_fp32_bytes(NVEMBED_TINY) == sum(p.stat().st_size for p in shards)  # stored in float32
    half = tmp_path / "half"
    half.mkdir()
    header = b'{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}'
    (half / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    assert checkpoint_fp32_bytes(half) == 2 * (8 + len(header) + 4)  # twice the bytes of a bfloat16 file
    assert checkpoint_fp32_bytes(tmp_path / "nothing") is None


def test_an_int8_models_size_counts_its_layers_matmul_weights_at_one_byte(tmp_path: Path) -> None:
    """int8 stores each layer's matmul weights one byte a parameter plus a scale and zero point a row; the token
    embeddings in bfloat16 (widened where the rest is float32); norms and anything else outside the layers in
    the rest's dtype."""
    entries = {
        "model.layers.0.mlp.up_proj.weight": [8, 4],  # 32 bytes + 8 rows x 12
        "encoder.layer.1.attention.self.query.weight": [3, 4],  # BERT's naming: 12 + 3 x 12
        "model.layers.0.input_layernorm.weight": [4],  # a norm: rest dtype
        "model.embed_tokens.weight": [10, 4],  # an embedding table: bfloat16
        "latent_attention_model.latents": [5, 4],  # outside the layers: rest dtype
    }
    header = json.dumps({k: {"dtype": "BF16", "shape": v, "data_offsets": [0, 0]} for k, v in entries.items()})
    for shard, names in (("model-1.safetensors", list(entries)[:2]), ("model-2.safetensors", list(entries)[2:])):
        part = json.dumps({k: json.loads(header)[k] for k in names}).encode()
        (tmp_path / shard).write_bytes(len(part).to_bytes(8, "little") + part)
    rest = 4 + 40 + 20
    assert loaded_weight_bytes(tmp_path, "int8", "bfloat16") == 32 + 96 + 12 + 36 + 2 * rest
    assert loaded_weight_bytes(tmp_path, "int8", "float32") == 32 + 96 + 12 + 36 + 2 * 40 + 4 * (rest - 40)
    assert loaded_weight_bytes(tmp_path, "bfloat16") == 2 * (32 + 12 + rest)  # every tensor in bfloat16
    released = re.compile(r"latents$")  # freed once loaded: not counted
    assert loaded_weight_bytes(tmp_path, "int8", "bfloat16", released) == 32 + 96 + 12 + 36 + 2 * (rest - 20)
    (tmp_path / "model-3.safetensors").write_bytes(b"\x05" + b"\0" * 7 + b"[1,2]")  # unreadable: unknown
    assert loaded_weight_bytes(tmp_path, "int8") is None


def test_nvembeds_folded_latent_projections_are_not_counted() -> None:
    """The folded latent layer frees its query, key/value and output projections once folded."""
    from safetensors import safe_open

    from nvrag.embedder.registry import weight_bytes

    projections = 0
    for shard in NVEMBED_TINY.glob("*.safetensors"):
        with safe_open(shard, "np") as f:
            keys = f.keys()  # (a safe_open handle is not iterable)
            names = [n for n in keys if re.search(r"\.fn\.to_(q|kv|out)\.weight$", n)]
            projections += sum(int(np.prod(f.get_slice(n).get_shape())) for n in names)
    assert projections > 0
    full = weight_bytes(NVEMBED_TINY, "float32")
    assert full is not None and weight_bytes(NVEMBED_TINY, "float32", folded=True) == full - 4 * projections


def test_minilm_in_bfloat16_is_close_to_float32_and_says_what_it_computes_in(minilm: MiniLMEmbedder) -> None:
    texts = [f"sentence {i} on topic {i % 5}, " * (1 + i % 7) for i in range(40)]
    fast = MiniLMEmbedder(dtype="bfloat16")
    assert (minilm.info.compute_dtype, fast.info.compute_dtype) == ("float32", "bfloat16")
    exact, approx = minilm.embed_documents(texts), fast.embed_documents(texts)
    cosines = np.sum(exact * approx, axis=1)
    assert cosines.min() > 0.999  # measured 0.9999+ (docs/performance.md)
    assert not np.array_equal(exact, approx)  # it really computed in bfloat16


def test_query_only_loads_compute_float32_on_the_cpu_unless_told_otherwise() -> None:
    assert choose_query_dtype(None, "cpu").name == "float32"
    assert choose_query_dtype(None, "cpu:0").name == "float32"
    assert choose_query_dtype("bf16", "cpu").name == "bfloat16"
    assert choose_query_dtype(None, "cuda") == choose_dtype(None, "cuda")
    queries = load_embedder("all-MiniLM-L6-v2", LoadOptions(for_queries=True))
    assert queries.info.compute_dtype == "float32"
    assert isinstance(queries, MiniLMEmbedder) and queries.uses_numpy(1, 12)
    documents = load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype="float32"))
    assert isinstance(documents, MiniLMEmbedder) and not documents.uses_numpy(1, 12)
    asked = load_embedder("all-MiniLM-L6-v2", LoadOptions(for_queries=True, dtype="bfloat16"))
    assert asked.info.compute_dtype == "bfloat16"


def test_the_loader_passes_the_choice_to_the_model() -> None:
    assert load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype="float32")).info.compute_dtype == "float32"
    assert load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype="bfloat16")).info.compute_dtype == "bfloat16"
    default = load_embedder("all-MiniLM-L6-v2", LoadOptions())
    assert default.info.compute_dtype == choose_dtype(None, "cpu").name
    tiny = load_embedder("nv-embed-v2", LoadOptions(model_path=NVEMBED_TINY, dtype="bfloat16"))
    assert tiny.info.compute_dtype == "bfloat16" and tiny.notes == ()

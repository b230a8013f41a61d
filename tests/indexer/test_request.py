"""IndexRequest: every rule between options lives in check_request and runs when a request is made."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from nvrag.errors import ConfigError, InputError
from nvrag.indexer import IndexRequest, ItemsSource, PathSource, RayOptions
from nvrag.schema import Document


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "alpha"}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"index": "bad name"},
            ConfigError,
            "invalid index name 'bad name': use up to 64 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit",
        ),
        ({"quantization": "int4"}, ConfigError, "unknown quantization 'int4'; use none or binary"),
        ({"vector_dtype": "int8"}, ConfigError, "unknown vector dtype 'int8'; use float32 or float16"),
        ({"batch_size": 0}, ConfigError, "--batch-size must be at least 1 (got 0)"),
        ({"engine": "spark"}, ConfigError, "--engine 'spark': use local or ray"),
        (
            {"engine": "ray", "devices": ("cpu", "cpu")},
            ConfigError,
            "--devices is for the local engine; with --engine ray use --workers/--gpus-per-worker",
        ),
        (
            {"ray": RayOptions(workers=2)},
            ConfigError,
            "--ray-address, --workers and --gpus-per-worker need --engine ray",
        ),
        (
            {"ray": RayOptions(address="auto")},
            ConfigError,
            "--ray-address, --workers and --gpus-per-worker need --engine ray",
        ),
    ],
)
def test_each_rule_refuses_with_its_one_line(
    corpus: Path, changes: dict[str, object], error: type[Exception], message: str
) -> None:
    valid = IndexRequest("t", PathSource(corpus))
    with pytest.raises(error) as raised:
        replace(valid, **changes)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_a_missing_path_an_upload_that_prunes_and_ray_without_a_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^.*/missing: no such file or directory$"):
        IndexRequest("t", PathSource(tmp_path / "missing"))
    uploads = ItemsSource([Document("upload:a.txt", "x", "/a")], uploads=True)
    with pytest.raises(ConfigError, match=r"^an upload cannot prune: it would remove every document"):
        IndexRequest("t", uploads, prune=True)
    with pytest.raises(ConfigError, match=r"^an upload cannot rebuild the index"):
        IndexRequest("t", uploads, reembed=True)
    with pytest.raises(ConfigError, match=r"^--engine ray reads a path"):
        IndexRequest("t", ItemsSource([]), engine="ray")


def test_a_valid_request_is_frozen_and_derives_its_defaults(corpus: Path) -> None:
    request = IndexRequest("t", PathSource(corpus), devices=("cpu", "cpu"))
    assert request.batch_chunks == 512  # 256 per device
    assert replace(request, batch_size=7).batch_chunks == 7
    assert not request.explicit_model and not request.uploads
    assert IndexRequest("t", PathSource(corpus), model="all-MiniLM-L6-v2").explicit_model
    assert not IndexRequest("t", PathSource(corpus), model=" AUTO ").explicit_model
    assert IndexRequest("t", ItemsSource([], uploads=True)).uploads
    with pytest.raises(FrozenInstanceError):
        request.prune = True  # type: ignore[misc]
    ray = IndexRequest("t", PathSource(corpus), engine="ray", ray=RayOptions(workers=2))
    assert ray.ray.workers == 2

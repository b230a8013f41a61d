"""Servers prepare each model for many requests once ready (app/serving.prepare_for_serving): a line each, and a
failure there is a line too, never the server's end."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from nvrag.app.serving import prepare_for_serving
from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.base import FloatArray
from nvrag.embedder.registry import LoadOptions, load_embedder
from nvrag.embedder.scheduler import Scheduler
from nvrag.errors import OverloadedError
from tests.conftest import NVEMBED_TINY
from tests.reranker.fakes import SharedWords

FAMILY = NVEMBED_TINY.parent / "family"


class Prepared(WordLengthEmbedder):
    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        return f"{self.name}: ready for many requests"


class Broken(WordLengthEmbedder):
    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        raise RuntimeError("no kernel for this CPU")


def test_each_model_says_what_was_done_and_a_failure_is_one_line() -> None:
    said: list[str] = []
    prepare_for_serving([Prepared(), WordLengthEmbedder(), Broken()], said.append)
    name = WordLengthEmbedder().name
    assert said == [
        f"{name}: ready for many requests",
        f"{name}: not prepared for serving (RuntimeError: no kernel for this CPU); it serves as loaded",
    ]


class PreparedWords(SharedWords):
    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        return f"{self.name}: ready for many requests"


def test_a_model_prepared_runs_one_pass_before_any_request_and_others_none() -> None:
    """The first pass after preparing (prepacked weights: oneDNN's one-time set-up of their kernels) is paid
    by the server, not by the first request after; a model with nothing prepared, or whose preparation failed,
    is not run."""
    prepared, plain, broken, reranker = Prepared(), WordLengthEmbedder(), Broken(), PreparedWords()
    prepare_for_serving([prepared, plain, broken, reranker], None)
    assert [len(m.forward_calls) for m in (prepared, plain, broken)] == [1, 0, 0]
    assert reranker.seen == [["warm-up"]]
    unprepared = SharedWords()
    prepare_for_serving([unprepared], None)
    assert unprepared.seen == []


class PreparedThenClosed(Prepared):
    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> FloatArray:
        raise OverloadedError("model-a was unloaded to make room for another model; retry")


def test_a_first_pass_that_fails_leaves_the_model_prepared_and_says_so() -> None:
    said: list[str] = []
    prepare_for_serving([PreparedThenClosed()], said.append)  # unloaded by the pool meanwhile: nothing raised
    assert said == [f"{WordLengthEmbedder().name}: ready for many requests"]


def test_what_was_loaded_is_frozen_so_full_collections_skip_it() -> None:
    # a full collection walks every tracked object with the GIL held: under load the server's (modules, model,
    # app) stalled every request for 0.2 s every few seconds; frozen, collections see only new objects
    gc.unfreeze()
    model = Prepared()
    assert any(o is model for o in gc.get_objects())
    prepare_for_serving([model], None)
    assert gc.get_freeze_count() > 0
    assert not any(o is model for o in gc.get_objects())
    later = Prepared()  # what requests allocate afterwards is collected as usual
    assert any(o is later for o in gc.get_objects())


@pytest.mark.parametrize(
    ("name", "folder"),
    [("nvidia/NV-Embed-v2", NVEMBED_TINY), ("Qwen/Qwen3-Embedding-0.6B", FAMILY / "qwen3-embedding")],
)
def test_a_prepared_and_frozen_model_is_freed_once_the_pool_closes_it(name: str, folder: Path) -> None:
    """Frozen objects are never collected, so a model the pool unloads after the freeze must be freed by
    reference counting alone: no reference cycle may hold its torch module (NV-Embed and a decoder family,
    each scheduled, served, prepacked)."""
    embedder = load_embedder(name, LoadOptions(model_path=folder, dtype="bfloat16"))
    scheduled = Scheduler(embedder)
    scheduled.embed_documents(["a first document", "and a second one"])
    prepare_for_serving([scheduled], None)  # prepacks where it can, then freezes everything loaded
    module = weakref.ref(embedder.model)
    workers = scheduled.queue.workers
    scheduled.close()
    for worker in workers:
        worker.join(timeout=60)  # a guard against a hang
    del scheduled, embedder
    gc.collect()  # (frozen cycles would survive it)
    assert module() is None

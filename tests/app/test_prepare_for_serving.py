"""Servers prepare each model for many requests once ready (app/serving.prepare_for_serving): a line each, and a
failure there is a line too, never the server's end."""

from __future__ import annotations

import gc
from collections.abc import Callable

from nvrag.app.serving import prepare_for_serving
from nvrag.embedder import WordLengthEmbedder


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

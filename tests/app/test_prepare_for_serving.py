"""Servers prepare each model for many requests once ready (app/serving.prepare_for_serving): a line each, and a
failure there is a line too, never the server's end."""

from __future__ import annotations

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

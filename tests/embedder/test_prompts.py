from __future__ import annotations

import pytest

from nvrag.embedder import TASK_INSTRUCTIONS, resolve_instruction
from nvrag.errors import InstructionError


def test_task_presets_resolve_case_insensitively() -> None:
    assert resolve_instruction(task="scifact") == (
        "Given a scientific claim, retrieve documents that support or refute the claim"
    )
    assert resolve_instruction(task="NFCorpus") == TASK_INSTRUCTIONS["NFCorpus"]


def test_free_text_and_nothing() -> None:
    assert resolve_instruction(instruction="Find recipes") == "Find recipes"
    assert resolve_instruction() is None


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(InstructionError, match=r"unknown task 'Nope'; known tasks: ArguAna, .*SciFact"):
        resolve_instruction(task="Nope")


def test_task_and_instruction_together_are_refused() -> None:
    with pytest.raises(InstructionError, match="not both"):
        resolve_instruction(task="NQ", instruction="x")


def test_all_fourteen_nvembed_retrieval_tasks_are_presets() -> None:
    assert len(TASK_INSTRUCTIONS) == 14

"""Query instructions as data: NV-Embed-v2's task presets (its instructions.json for the MTEB retrieval tasks)."""

from __future__ import annotations

from nvrag.errors import InstructionError

NVEMBED_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: "

TASK_INSTRUCTIONS: dict[str, str] = {
    "ArguAna": "Given a claim, retrieve documents that support or refute the claim",
    "ClimateFEVER": "Given a claim about climate change, retrieve documents that support or refute the claim",
    "DBPedia": "Given a query, retrieve relevant entity descriptions from DBPedia",
    "FEVER": "Given a claim, retrieve documents that support or refute the claim",
    "FiQA2018": "Given a financial question, retrieve relevant passages that answer the query",
    "HotpotQA": "Given a multi-hop question, retrieve documents that can help answer the question",
    "MSMARCO": "Given a web search query, retrieve relevant passages that answer the query",
    "NFCorpus": "Given a question, retrieve relevant documents that answer the question",
    "NQ": "Given a question, retrieve passages that answer the question",
    "QuoraRetrieval": "Given a question, retrieve questions that are semantically equivalent to the given question",
    "SCIDOCS": "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "Touche2020": "Given a question, retrieve passages that answer the question",
    "TRECCOVID": "Given a query on COVID-19, retrieve documents that answer the query",
}

DEFAULT_QUERY_INSTRUCTION = "Given a question, retrieve passages that answer the question"


def resolve_instruction(task: str | None = None, instruction: str | None = None) -> str | None:
    """The instruction text for a task preset name or free text; None when neither is given.

    Task names match case-insensitively. Giving both is an error: it is unclear which one the user meant.
    """
    if task is not None and instruction is not None:
        raise InstructionError("give either a task preset or an instruction, not both")
    if instruction is not None:
        return instruction
    if task is None:
        return None
    by_lower = {name.lower(): text for name, text in TASK_INSTRUCTIONS.items()}
    found = by_lower.get(task.strip().lower())
    if found is None:
        known = ", ".join(sorted(TASK_INSTRUCTIONS))
        raise InstructionError(f"unknown task {task!r}; known tasks: {known}")
    return found

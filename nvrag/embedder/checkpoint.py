"""What a checkpoint folder is, read from its own files the way sentence-transformers reads them.

- config.json: the architecture (``model_type``), shapes, attention (``is_causal``), RoPE;
- modules.json: Transformer → Pooling (→ Normalize); any other module is refused by name;
- 1_Pooling/config.json (the Pooling module's folder): exactly one of CLS, mean or last-token pooling, and
  ``include_prompt``;
- config_sentence_transformers.json: the prompts and ``default_prompt_name``;
- sentence_bert_config.json: ``max_seq_length`` and ``do_lower_case``.

A style (families.py) adds what files cannot say: the license, whether the family is Matryoshka-trained, and,
where a hub config leaves attention to remote code, whether it is bidirectional. Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvrag.errors import CheckpointError
from nvrag.model.config import read_config_json
from nvrag.model.decoder_config import FAMILIES

POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "last"}
UNSUPPORTED_MODES = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # sentence-transformers' encode_document order
# model_type → (family, bidirectional): NVIDIA's Llama embedders name their remote-code bidirectional Llama so
MODEL_TYPE_ALIASES = {"llama_bidirec": ("llama", True), "bidirectional_llama": ("llama", True)}
INSTRUCT = re.compile(r"Instruct: (?P<task>.*)(?P<tail>\nQuery:\s?)", re.DOTALL)


@dataclass(frozen=True)
class FolderFacts:
    """Everything a decoder checkpoint folder says about how to embed with it."""

    folder: Path
    config: dict[str, Any]
    model_type: str
    pooling: str  # cls | mean | last
    include_prompt: bool
    prompts: dict[str, str] = field(default_factory=dict)
    query_prompt: str = ""
    document_prompt: str = ""
    max_seq_length: int | None = None
    lower_case: bool = False
    remote_code: bool = False  # config.json's auto_map names code nvrag does not run

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size", 0))


def query_template(prompt: str) -> tuple[str, str | None]:
    """A query prompt as (template, default instruction): ``Instruct: TASK\\nQuery:`` prompts become a template
    with ``{instruction}`` where TASK was (keeping the family's exact tail, with or without its trailing space);
    any other prompt is a fixed prefix."""
    found = INSTRUCT.fullmatch(prompt)
    if found is None:
        return prompt, None
    return "Instruct: {instruction}" + found.group("tail"), found.group("task")


def _optional_json(path: Path) -> dict[str, Any] | None:
    try:
        return read_config_json(path)
    except FileNotFoundError:
        return None


def _pooling(folder: Path, modules: list[Any] | None) -> tuple[str, bool] | None:
    """(kind, include_prompt) from the Pooling module's config, or None where the folder has none."""
    if modules is None:
        return None
    types = [str(m.get("type", "")) if isinstance(m, dict) else "" for m in modules]
    known = ("models.Transformer", "models.Pooling", "models.Normalize")
    others = [t for t in types if not t.endswith(known)]
    if others:
        raise CheckpointError(
            f"{folder}/modules.json: module {others[0]!r} is not supported (nvrag runs Transformer, "
            "Pooling and Normalize)"
        )
    pooling = next((m for m, t in zip(modules, types, strict=True) if t.endswith("models.Pooling")), None)
    if pooling is None:
        return None
    path = folder / str(pooling.get("path", "1_Pooling")) / "config.json"
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(f"{folder}/modules.json: the Pooling module's path leaves the folder")
    data = _optional_json(path)
    if data is None:
        raise CheckpointError(f"{path}: missing; modules.json names a Pooling module there")
    chosen = [kind for key, kind in POOLING_MODES.items() if data.get(key)]
    unsupported = [key for key in UNSUPPORTED_MODES if data.get(key)]
    if unsupported:
        raise CheckpointError(f"{path}: {unsupported[0]} is not supported (nvrag pools by CLS, mean or last token)")
    if len(chosen) != 1:
        raise CheckpointError(f"{path}: expected exactly one pooling mode, found {len(chosen)}")
    return chosen[0], bool(data.get("include_prompt", True))


def _prompts(folder: Path) -> tuple[dict[str, str], str | None]:
    data = _optional_json(folder / "config_sentence_transformers.json") or {}
    raw = data.get("prompts") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise CheckpointError(f"{folder}/config_sentence_transformers.json: prompts must map names to strings")
    default = data.get("default_prompt_name")
    return {str(k): v for k, v in raw.items()}, default if isinstance(default, str) and default in raw else None


def query_prompt_name(prompts: dict[str, str], default: str | None) -> str | None:
    """The prompt a query gets: ``query`` (sentence-transformers' encode_query), else the default prompt, else
    the first prompt named for queries (e5's ``web_search_query``, the model card's retrieval prompt)."""
    if "query" in prompts:
        return "query"
    if default is not None:
        return default
    return next((name for name in prompts if name.endswith("query")), None)


def document_prompt_name(prompts: dict[str, str], default: str | None) -> str | None:
    found = next((name for name in DOCUMENT_PROMPT_NAMES if name in prompts), None)
    return found if found is not None else default


def read_folder(folder: Path, *, pooling_fallback: str | None = None) -> FolderFacts:
    """The facts of a decoder checkpoint folder; CheckpointError names the first thing missing or unsupported.
    ``pooling_fallback``: the pooling a style knows for folders without sentence-transformers files."""
    try:
        config = read_config_json(folder / "config.json")
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no config.json; give a model checkpoint folder") from None
    model_type = str(config.get("model_type"))
    if model_type in MODEL_TYPE_ALIASES:  # a hub repo's own name for a bidirectional variant
        model_type, bidirectional = MODEL_TYPE_ALIASES[model_type]
        config = config | {"model_type": model_type, "is_causal": config.get("is_causal", not bidirectional)}
    if model_type not in FAMILIES:
        raise CheckpointError(f"{folder}: model_type {model_type!r} is not a supported decoder architecture")
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder}: no tokenizer.json (the checkpoint's own tokenizer is required)")
    modules_data = _optional_json_list(folder / "modules.json")
    found = _pooling(folder, modules_data)
    if found is None:
        if pooling_fallback is None:
            raise CheckpointError(
                f"{folder}: no sentence-transformers pooling config (modules.json and 1_Pooling/config.json), so "
                "the pooling is unknown; add them or use a registered model (nvrag models)"
            )
        found = (pooling_fallback, True)
    prompts, default = _prompts(folder)
    query_name = query_prompt_name(prompts, default)
    document_name = document_prompt_name(prompts, default)
    st_config = _optional_json(folder / "sentence_bert_config.json") or {}
    max_seq = st_config.get("max_seq_length")
    auto_map = config.get("auto_map")
    return FolderFacts(
        folder=folder,
        config=config,
        model_type=model_type,
        pooling=found[0],
        include_prompt=found[1],
        prompts=prompts,
        query_prompt=prompts[query_name] if query_name else "",
        document_prompt=prompts[document_name] if document_name else "",
        max_seq_length=int(max_seq) if isinstance(max_seq, int) and max_seq > 0 else None,
        lower_case=bool(st_config.get("do_lower_case", False)),
        remote_code=isinstance(auto_map, dict) and bool(auto_map),
    )


def _optional_json_list(path: Path) -> list[Any] | None:
    """modules.json is a JSON list (read_config_json wants an object): read it with the same bound."""
    import json

    from nvrag.model.config import CONFIG_MAX_BYTES

    try:
        with path.open("rb") as f:
            raw = f.read(CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= CONFIG_MAX_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        data = None
    if not isinstance(data, list):
        raise CheckpointError(f"{path}: expected a JSON list of modules")
    return data

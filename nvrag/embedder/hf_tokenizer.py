"""A checkpoint's own tokenizer (tokenizer.json), with the special tokens its reference adds.

tokenizer.json's post-processor says which tokens go around a text (Qwen's appended ``<|endoftext|>``,
Llama-3's ``<|begin_of_text|>``). One exception is kept from transformers 4, the version these models were
trained and published with: a Llama-class tokenizer (LlamaTokenizer, which e5-mistral's and Mistral's repos
name) whose tokenizer_config.json sets ``add_bos_token`` / ``add_eos_token`` gets exactly those tokens, whatever
tokenizer.json's template says. e5-mistral-7b-instruct's tokenizer.json only adds ``<s>`` and relies on
``add_eos_token: true``; transformers 5 reads tokenizer.json as is and silently drops the ``</s>`` the model
pools (mteb PR #5237).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, processors

from nvrag.errors import CheckpointError
from nvrag.model.config import read_config_json

LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast")
TOKENIZER_MAX_BYTES = 64 << 20  # real tokenizer.json files are 7-17 MiB


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(folder: Path) -> Tokenizer:
    """The folder's tokenizer.json (no padding, no truncation), special tokens as its reference adds them."""
    path = folder / "tokenizer.json"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if size > TOKENIZER_MAX_BYTES:
        raise CheckpointError(f"{path}: over {TOKENIZER_MAX_BYTES >> 20} MiB; not a tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception for any malformed file
        raise CheckpointError(f"{path}: not a tokenizer.json ({str(exc)[:200]})") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    try:
        config = read_config_json(folder / "tokenizer_config.json")
    except FileNotFoundError:
        return tokenizer
    if config.get("tokenizer_class") in LLAMA_CLASSES and ("add_bos_token" in config or "add_eos_token" in config):
        _llama_template(tokenizer, config, path)
    return tokenizer


def _llama_template(tokenizer: Tokenizer, config: dict[str, Any], path: Path) -> None:
    """transformers 4's LlamaTokenizerFast.update_post_processor: ``[bos] $A [eos]`` from the two flags."""
    add_bos, add_eos = bool(config.get("add_bos_token", True)), bool(config.get("add_eos_token", False))
    bos, eos = _token(config.get("bos_token")), _token(config.get("eos_token"))
    parts, specials = [], []
    for wanted, token in ((add_bos, bos), (add_eos, eos)):
        if not wanted:
            continue
        token_id = tokenizer.token_to_id(token) if token is not None else None
        if token is None or token_id is None:
            raise CheckpointError(f"{path.parent}/tokenizer_config.json: a special token to add is not in {path.name}")
        specials.append((token, token_id))
    if add_bos and bos is not None:
        parts.append(f"{bos}:0")
    parts.append("$A:0")
    if add_eos and eos is not None:
        parts.append(f"{eos}:0")
    single = " ".join(parts)
    pair = single + " " + " ".join(p.replace("$A:0", "$B:1").replace(":0", ":1") for p in parts)
    template = processors.TemplateProcessing(single=single, pair=pair, special_tokens=sorted(set(specials)))
    wanted_ids = tokenizer.encode("a", add_special_tokens=False).ids
    current = tokenizer.encode("a").ids
    expected = [i for _, i in specials[:1]] * add_bos + wanted_ids + [i for _, i in specials[-1:]] * add_eos
    if current != expected:
        tokenizer.post_processor = template


def prompt_length(tokenizer: Tokenizer, prompt: str) -> int:
    """sentence-transformers' prompt length (for ``include_prompt: false``): the prompt's ids with special
    tokens, less a trailing special token (EOS or SEP) if the tokenizer appends one."""
    if not prompt:
        return 0
    encoding = tokenizer.encode(prompt)
    n = len(encoding.ids)
    return n - 1 if n and encoding.special_tokens_mask[-1] else n

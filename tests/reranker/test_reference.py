"""Checkpoints of other shapes than the shared fixtures, scored against the references themselves (the dev
extra's transformers and sentence-transformers): a Qwen3 LLM reranker with untied embeddings, biases and its
own head_dim through the model card's code, and a BERT cross-encoder naming Sigmoid through CrossEncoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nvrag.reranker import load_reranker
from nvrag.reranker.llm import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, format_pair
from tests.conftest import REPO

FAMILY = REPO.parent / "shared" / "fixtures" / "family"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
QUERY = "What is the capital of China?"
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "",
    "Beijing " * 80,  # cut at max length
]
MAX_LENGTH = 96


def jitter(*modules: torch.nn.Module) -> None:
    """Move every weight off its initial value (norms at 1, biases at 0 would hide a skipped norm or bias)."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)


def with_tokenizer(model: object, folder: Path, style: str) -> Path:
    model.save_pretrained(folder)  # type: ignore[attr-defined]
    for name in TOKENIZER_FILES:
        if (FAMILY / style / name).is_file():
            shutil.copy(FAMILY / style / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(7)
    config = Qwen3Config(
        vocab_size=151669,
        hidden_size=24,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=10,
        attention_bias=True,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        max_position_embeddings=512,
    )
    model = Qwen3ForCausalLM(config).eval()
    jitter(model)
    return with_tokenizer(model, tmp_path_factory.mktemp("qwen3-reranker-other"), "qwen3-reranker")


def card_scores(folder: Path, query: str, documents: list[str], instruction: str) -> np.ndarray:
    """The Qwen3-Reranker model card's transformers code (process_inputs + compute_logits)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    pairs = [format_pair(instruction, query, d) for d in documents]
    inputs = tokenizer(
        pairs,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=MAX_LENGTH - len(prefix) - len(suffix),
    )
    for i, ids in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix + ids + suffix
    batch = tokenizer.pad(inputs, padding=True, return_tensors="pt")
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    with torch.no_grad():
        logits = model(**batch).logits[:, -1, :]
    stacked = torch.stack([logits[:, no], logits[:, yes]], dim=1)
    return torch.nn.functional.log_softmax(stacked, dim=1)[:, 1].exp().numpy()


@pytest.mark.parametrize("instruction", [DEFAULT_INSTRUCTION, "Find code"])
def test_an_untied_qwen3_reranker_with_biases_matches_the_model_card_code(qwen_folder: Path, instruction: str) -> None:
    ours = load_reranker(qwen_folder, dtype="float32", max_length=MAX_LENGTH)
    got = ours.score(QUERY, DOCUMENTS, instruction)
    np.testing.assert_allclose(got, card_scores(qwen_folder, QUERY, DOCUMENTS, instruction), atol=1e-5)
    assert ours.encode(QUERY, DOCUMENTS, instruction)[-1].truncated
    assert float(np.ptp(got)) > 1e-3  # the documents score differently, or this proves little


def test_a_bert_cross_encoder_naming_sigmoid_matches_cross_encoder(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=80,
        max_position_embeddings=128,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()
    jitter(model)
    folder = with_tokenizer(model, tmp_path / "bert-other", "bert-cross-encoder")
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    data["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    (folder / "config.json").write_text(json.dumps(data), encoding="utf-8")
    reference = CrossEncoder(str(folder), device="cpu", max_length=64, model_kwargs={"dtype": torch.float32})
    expected = reference.predict([(QUERY, d) for d in DOCUMENTS], batch_size=8)
    got = load_reranker(folder, dtype="float32", max_length=64).score(QUERY, DOCUMENTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert float(got.min()) > 0 and float(got.max()) < 1  # the sigmoid was applied


def xlm_roberta_tokenizer(folder: Path) -> None:
    """A small word-level tokenizer with XLM-RoBERTa's specials and pair template (<s> A </s></s> B </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = sorted({w.lower().strip("?.,") for text in [QUERY, *DOCUMENTS] for w in text.split()})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.save(str(folder / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, "unk_token": "<unk>", **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def test_an_xlm_roberta_cross_encoder_matches_cross_encoder(tmp_path: Path) -> None:
    """bge-reranker-v2-m3's form: positions numbered after the padding id, one segment, the classification
    head's dense + out_proj; no activation named (the raw logit; CrossEncoder is told Identity to compare)."""
    from sentence_transformers import CrossEncoder
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(5)
    config = XLMRobertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, num_labels=1,
    )  # fmt: skip
    model = XLMRobertaForSequenceClassification(config).eval()
    jitter(model)
    folder = tmp_path / "xlmr"
    model.save_pretrained(folder)
    xlm_roberta_tokenizer(folder)
    documents = [d[:300] for d in DOCUMENTS]
    reference = CrossEncoder(str(folder), device="cpu", max_length=38, activation_fn=torch.nn.Identity(),
                             model_kwargs={"dtype": torch.float32})  # fmt: skip
    expected = reference.predict([(QUERY, d) for d in documents], batch_size=8)
    ours = load_reranker(folder, dtype="float32", max_length=38)
    assert ours.info.max_tokens == 38 and ours.info.score == "the logit"
    pairs = ours.encode(QUERY, documents, None)
    assert pairs[0].ids[:1] == [0] and pairs[0].ids.count(2) == 3 and set(pairs[0].segments) == {0}
    assert pairs[-1].truncated and len(pairs[-1].ids) == 38
    np.testing.assert_allclose(ours.score(QUERY, documents), expected, atol=1e-5)
    with pytest.raises(Exception, match="outside"):
        load_reranker(folder, max_length=39)  # 40 positions, numbered from 2: 38 usable


@pytest.mark.parametrize(("pooling", "temperature"), [("avg", 1.0), ("last", 2.5)])
def test_a_bidirectional_llama_classifier_matches_its_reference(
    tmp_path: Path, pooling: str, temperature: float
) -> None:
    """NVIDIA's Llama Nemotron reranker form: what its remote code computes (a bidirectional LlamaModel, the
    config's pooling over the mask, the bias-free score head, divided by the temperature), written here with
    transformers' LlamaModel (config is_causal false) on a random checkpoint in the hub repo's layout."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    torch.manual_seed(11)
    config = LlamaConfig(
        vocab_size=128256, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512, rope_theta=500000.0, is_causal=False,
        pad_token_id=128001,
    )  # fmt: skip
    body = LlamaModel(config).eval()
    score = torch.nn.Linear(24, 1, bias=False)
    jitter(body, score)
    folder = tmp_path / "nemotron-rerank"
    folder.mkdir()
    weights = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()} | {"score.weight": score.weight}
    save_file({k: v.detach().clone() for k, v in weights.items()}, str(folder / "model.safetensors"))
    data = json.loads(config.to_json_string()) | {
        "model_type": "llama_bidirec", "architectures": ["LlamaBidirectionalForSequenceClassification"],
        "pooling": pooling, "temperature": temperature, "num_labels": 1,
        "auto_map": {"AutoModelForSequenceClassification": "llama_bidirectional_model.LlamaBidirectional"},
    }  # fmt: skip
    data.pop("is_causal", None)  # the hub config leaves attention to the remote code
    (folder / "config.json").write_text(json.dumps(data), encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (FAMILY / "llama-nemotron-embed" / name).is_file():
            shutil.copy(FAMILY / "llama-nemotron-embed" / name, folder / name)
    texts = [f"question:{QUERY} \n \n passage:{d}" for d in DOCUMENTS]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or "<|end_of_text|>"
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = body(**batch).last_hidden_state
    mask = batch["attention_mask"]
    if pooling == "avg":
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1)[:, None]
    else:
        pooled = hidden[torch.arange(len(texts)), mask.sum(1) - 1]
    expected = (score(pooled) / temperature)[:, 0].detach().numpy()
    ours = load_reranker(folder, dtype="float32", max_length=MAX_LENGTH)
    assert ours.info.name == "local:llama-nemotron-rerank/nemotron-rerank"
    pairs = ours.encode(QUERY, DOCUMENTS, None)
    assert [p.ids for p in pairs] == [
        ids[: int(m.sum())] for ids, m in zip(batch["input_ids"].tolist(), mask, strict=True)
    ]
    np.testing.assert_allclose(ours.score(QUERY, DOCUMENTS), expected, atol=1e-5)
    assert float(np.ptp(expected)) > 1e-3

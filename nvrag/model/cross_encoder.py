"""A BERT-family sequence classifier: the cross-encoder rerankers' model. Hugging Face's
BertForSequenceClassification (the ms-marco MiniLM cross-encoders and other BERT ones) and
XLMRobertaForSequenceClassification / RobertaForSequenceClassification (bge-reranker-v2-m3's form).

The pair runs through the BERT encoder (model/bert.py: RoBERTa is BERT's layers with positions numbered after
the padding id and one segment); the first token's final state goes through a dense layer and tanh (BERT's
"pooler", RoBERTa's classification head's ``dense``) and a linear layer to ``num_labels`` logits (BERT's
``classifier``, RoBERTa's ``out_proj``): the same arithmetic under two sets of names. Returns the raw logits in
float32: the activation a checkpoint names (or none) is the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nvrag.errors import CheckpointError
from nvrag.model.bert import BertEncoder, load_checked
from nvrag.model.bert_config import BertConfig, check_names, name_map, parameter_shapes
from nvrag.model.dense import cast_dense
from nvrag.model.skeleton import skeleton
from nvrag.model.widened import WideLinear

# model_type → (the encoder's key prefix, the head's dense and output layers' names)
LAYOUTS = {
    "bert": ("bert.", "bert.pooler.dense", "classifier"),
    "roberta": ("roberta.", "classifier.dense", "classifier.out_proj"),
    "xlm-roberta": ("roberta.", "classifier.dense", "classifier.out_proj"),
}


class BertClassifier(nn.Module):
    def __init__(self, config: BertConfig, num_labels: int) -> None:
        super().__init__()
        self.encoder = BertEncoder(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) ids, mask and segment ids → (B, num_labels) float32 logits."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        # the pooler's input in its weight's dtype, unless it multiplies in float32 whatever its weight's
        first = hidden[:, 0] if isinstance(self.pooler, WideLinear) else hidden[:, 0].to(self.pooler.weight.dtype)
        pooled = torch.tanh(self.pooler(first))
        logits: torch.Tensor = self.classifier(pooled)
        return logits.float()


def num_labels_of(data: dict[str, Any], where: str) -> int:
    """config.json's label count: ``num_labels``, else the size of ``id2label`` (transformers' default is 2)."""
    value = data.get("num_labels")
    if value is None:
        labels = data.get("id2label")
        value = len(labels) if isinstance(labels, dict) and labels else 2
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise CheckpointError(f"{where}: num_labels is {value!r}; expected a count from 1 to 1024")
    return value


def classifier_names(
    config: BertConfig, num_labels: int, model_type: str = "bert"
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Our parameter name → the checkpoint's (BertForSequenceClassification's or RoBERTa's), and our name →
    shape, for every parameter."""
    prefix, dense, out = LAYOUTS[model_type]
    h = config.hidden_size
    names = {f"encoder.{ours}": prefix + theirs for ours, theirs in name_map(config).items()}
    shapes = {f"encoder.{ours}": shape for ours, shape in parameter_shapes(config).items()}
    for ours, theirs, shape in (
        ("pooler.weight", f"{dense}.weight", (h, h)),
        ("pooler.bias", f"{dense}.bias", (h,)),
        ("classifier.weight", f"{out}.weight", (num_labels, h)),
        ("classifier.bias", f"{out}.bias", (num_labels,)),
    ):
        names[ours], shapes[ours] = theirs, shape
    return names, shapes


def load_bert_classifier(
    folder: Path,
    config: BertConfig,
    num_labels: int,
    *,
    model_type: str = "bert",
    device: torch.device | str = "cpu",
    matmul_dtype: torch.dtype = torch.float32,
) -> BertClassifier:
    """The classifier of a ``*ForSequenceClassification`` folder of ``model_type`` (a key of LAYOUTS) from its
    model.safetensors, every key and shape checked. ``matmul_dtype`` as bert.load_bert: the linear layers'
    weights in it, norms and embeddings float32."""
    with skeleton():
        model = BertClassifier(config, num_labels)
    names, shapes = classifier_names(config, num_labels, model_type)
    prefix = LAYOUTS[model_type][0]
    unused = (f"{prefix}embeddings.position_ids", f"{prefix}embeddings.token_type_ids")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no model.safetensors (a cross-encoder is read from one safetensors file)")
    load_checked(weights, model, lambda stored: check_names(weights, names, shapes, stored, unused), device)
    cast_dense(model.encoder, matmul_dtype)
    model.pooler.to(matmul_dtype)
    model.classifier.to(matmul_dtype)
    return model.to(device).eval().requires_grad_(False)

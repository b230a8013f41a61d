"""Both shared reranker fixtures reproduced within 1e-5 in float32 (token ids exact, single pairs and one
padded batch of every case, truncated and empty documents), and each trap of their READMEs made on purpose
and shown to fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nvrag.errors import CheckpointError, ConfigError, InputError, ModelUnavailableError
from nvrag.reranker import PairInput, load_reranker, ranked
from nvrag.reranker.cross_encoder import CrossEncoderReranker
from nvrag.reranker.llm import LLMReranker
from tests.conftest import REPO

FAMILY = REPO.parent / "shared" / "fixtures" / "family"
QWEN, BERT = FAMILY / "qwen3-reranker", FAMILY / "bert-cross-encoder"
TOL = 1e-5


def golden(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "golden.json").read_text(encoding="utf-8"))
    return data


def reranker(folder: Path, **kwargs: Any) -> Any:
    return load_reranker(folder, dtype="float32", max_length=golden(folder)["max_length"], **kwargs)


def encoded(model: Any, case: dict[str, Any]) -> PairInput:
    pair: PairInput = model.encode(case["query"], [case["document"]], case.get("instruction"))[0]
    return pair


@pytest.mark.parametrize("folder", [QWEN, BERT], ids=["qwen3-reranker", "bert-cross-encoder"])
def test_every_case_has_the_reference_token_ids_and_truncation(folder: Path) -> None:
    model = reranker(folder)
    for case in golden(folder)["cases"]:
        pair = encoded(model, case)
        assert pair.ids == case["token_ids"], case["name"]
        if "token_type_ids" in case:
            assert pair.segments == case["token_type_ids"], case["name"]
        assert pair.truncated == case["truncated"], case["name"]


@pytest.mark.parametrize("folder", [QWEN, BERT], ids=["qwen3-reranker", "bert-cross-encoder"])
def test_every_case_scores_as_the_reference_alone_and_in_one_padded_batch(folder: Path) -> None:
    model = reranker(folder)
    cases = golden(folder)["cases"]
    expected = np.array([c["score"] for c in cases], dtype=np.float32)
    alone = np.array([model.score(c["query"], [c["document"]], c.get("instruction"))[0] for c in cases])
    np.testing.assert_allclose(alone, expected, atol=TOL)
    pairs = [encoded(model, c) for c in cases]
    assert len({len(p.ids) for p in pairs}) > 1  # so the batch really pads
    batched, tokens = model.score_pairs(pairs)  # every case in one batch (the budget holds them all)
    np.testing.assert_allclose(batched, expected, atol=TOL)
    assert tokens == sum(len(c["token_ids"]) for c in cases)
    model.batch_tokens = 1  # one pair per batch: the same scores
    np.testing.assert_allclose(model.score_pairs(pairs)[0], expected, atol=TOL)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "varlen"])
def test_the_llm_reranker_scores_the_same_on_every_attention_backend(backend: str) -> None:
    model = reranker(QWEN, attention=backend)
    cases = golden(QWEN)["cases"]
    scores, _ = model.score_pairs([encoded(model, c) for c in cases])
    np.testing.assert_allclose(scores, [c["score"] for c in cases], atol=TOL)


def test_the_llm_reranker_records_both_logits_as_the_reference() -> None:
    model = reranker(QWEN)
    cases = golden(QWEN)["cases"]
    ids, mask, _ = padded([encoded(model, c) for c in cases])
    logits = model.model.logits(ids, mask, backend="sdpa")  # columns: no, yes
    np.testing.assert_allclose(logits[:, 1].numpy(), [c["logit_yes"] for c in cases], atol=TOL)
    np.testing.assert_allclose(logits[:, 0].numpy(), [c["logit_no"] for c in cases], atol=TOL)


def padded(pairs: list[PairInput]) -> tuple[torch.Tensor, torch.Tensor, int]:
    from nvrag.embedder.runtime import right_padded

    ids, mask, _ = right_padded([p.ids for p in pairs], 0)
    return ids, mask, ids.shape[1]


# -- the traps, made on purpose -----------------------------------------------------------------------------


def test_swapping_yes_and_no_fails() -> None:
    model = reranker(QWEN)
    cases = golden(QWEN)["cases"]
    ids, mask, _ = padded([encoded(model, c) for c in cases])
    logits = model.model.logits(ids, mask, backend="sdpa")
    swapped = torch.sigmoid(logits[:, 0] - logits[:, 1]).numpy()
    assert np.abs(swapped - [c["score"] for c in cases]).max() > 1e-2


def test_dropping_the_suffix_fails() -> None:
    model = reranker(QWEN)
    cases = golden(QWEN)["cases"]
    cut = [PairInput(ids=encoded(model, c).ids[: -len(model.suffix)]) for c in cases]
    scores, _ = model.score_pairs(cut)
    assert np.abs(scores - [c["score"] for c in cases]).max() > 1e-2


def test_right_padding_and_reading_the_last_column_fails() -> None:
    """What a reference-style implementation gets if it pads on the right but still reads position -1."""
    model = reranker(QWEN)
    cases = golden(QWEN)["cases"]
    ids, mask, width = padded([encoded(model, c) for c in cases])
    hidden = model.model.backbone(ids, model.model.backbone.padded_batch(mask, "sdpa", torch.float32))
    logits = hidden[:, width - 1].float() @ model.model.head.float().T
    wrong = torch.sigmoid(logits[:, 1] - logits[:, 0]).numpy()
    short = [i for i, c in enumerate(cases) if len(c["token_ids"]) < width]
    assert short and np.abs(wrong[short] - np.array([cases[i]["score"] for i in short])).max() > 1e-3


def test_a_sigmoid_on_the_cross_encoder_logit_fails(tmp_path: Path) -> None:
    cases = golden(BERT)["cases"]
    scores = np.array([reranker(BERT).score(c["query"], [c["document"]])[0] for c in cases])
    assert np.abs(1 / (1 + np.exp(-scores)) - [c["score"] for c in cases]).max() > 0.1
    # the same checkpoint saying Sigmoid scores as the reference's score_sigmoid
    folder = tmp_path / "sigmoid"
    shutil.copytree(BERT, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["sentence_transformers"]["activation_fn"] = "torch.nn.modules.activation.Sigmoid"
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    sig = reranker(folder)
    assert sig.info.score == "sigmoid of the logit"
    got = np.array([sig.score(c["query"], [c["document"]])[0] for c in cases])
    np.testing.assert_allclose(got, [c["score_sigmoid"] for c in cases], atol=TOL)


def test_without_segment_ids_the_cross_encoder_fails() -> None:
    model = reranker(BERT)
    cases = golden(BERT)["cases"]
    flat = [PairInput(ids=p.ids, segments=[0] * len(p.ids)) for p in (encoded(model, c) for c in cases)]
    scores, _ = model.score_pairs(flat)
    assert np.abs(scores - [c["score"] for c in cases]).max() > 1e-3


# -- loading, bounds and refusals ---------------------------------------------------------------------------


def test_the_kind_is_recognised_from_the_files() -> None:
    assert isinstance(reranker(QWEN), LLMReranker)
    assert isinstance(reranker(BERT), CrossEncoderReranker)
    assert reranker(QWEN).takes_instructions and not reranker(BERT).takes_instructions
    assert reranker(BERT).info.max_tokens == 512  # tokenizer_config.json's model_max_length


def test_an_embedder_folder_is_not_a_reranker() -> None:
    with pytest.raises(CheckpointError, match="is not a reranker nvrag runs"):
        load_reranker(FAMILY / "qwen3-embedding")


def test_a_classifier_with_several_labels_or_an_unknown_activation_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    shutil.copytree(BERT, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps(config | {"num_labels": 3}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="3 labels"):
        load_reranker(folder)
    config["sentence_transformers"]["activation_fn"] = "my.module.Evil"
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match="not supported"):
        load_reranker(folder)


def test_an_unknown_name_is_one_line() -> None:
    with pytest.raises(ModelUnavailableError, match="neither a checkpoint folder nor a known reranker"):
        load_reranker("no/such-reranker")


def test_a_query_leaving_no_room_for_the_document_is_refused() -> None:
    model = load_reranker(QWEN, dtype="float32", max_length=60)
    with pytest.raises(InputError, match="no room for a document"):
        model.score("word " * 100, ["a document"])


def test_max_length_must_fit_the_template_and_the_positions() -> None:
    with pytest.raises(ConfigError, match="outside"):
        load_reranker(QWEN, max_length=20)  # the template alone is 48 tokens
    with pytest.raises(ConfigError, match="outside"):
        load_reranker(BERT, max_length=513)


def test_the_llm_reranker_loads_two_rows_of_the_head_not_the_vocabulary() -> None:
    model = reranker(QWEN).model
    assert tuple(model.head.shape) == (2, model.config.hidden_size)
    assert not any("lm_head" in name for name, _ in model.named_parameters())


def test_results_are_best_first_with_ties_in_input_order_and_cut_to_top_n() -> None:
    results = ranked(np.array([0.5, 0.9, 0.5, 0.1], dtype=np.float32), top_n=3)
    assert [(r.index, r.relevance_score) for r in results] == [(1, pytest.approx(0.9)), (0, 0.5), (2, 0.5)]


def test_bfloat16_stays_close_to_the_float32_reference() -> None:
    for folder in (QWEN, BERT):
        cases = golden(folder)["cases"]
        model = load_reranker(folder, dtype="bfloat16", max_length=golden(folder)["max_length"])
        scores, _ = model.score_pairs([encoded(model, c) for c in cases])
        assert np.abs(scores - [c["score"] for c in cases]).max() < 0.05


@pytest.mark.parametrize("folder", [QWEN, BERT], ids=["decoder", "cross-encoder"])
def test_a_server_prepacks_a_bfloat16_reranker_and_its_scores_stay_the_same(folder: Path) -> None:
    """Servers call prepare_for_serving once ready (app/serving.py): the encoder's or decoder's matmul weights
    go to oneDNN's layout, batches then keep their own width, and the scores are those of the plain weights
    up to bfloat16 rounding (attention's blocks follow the width). float32 models have nothing to pack."""
    from nvrag.model.prepack import PackedLinear, prepack_supported

    if not prepack_supported():
        pytest.skip("this PyTorch cannot prepack bfloat16 weights for oneDNN")
    cases = golden(folder)["cases"]
    model = load_reranker(folder, dtype="bfloat16", max_length=golden(folder)["max_length"])
    pairs = [encoded(model, c) for c in cases]
    plain, _ = model.score_pairs(pairs)
    line = model.prepare_for_serving()
    assert line is not None and "matmul weights prepacked" in line
    assert any(isinstance(m, PackedLinear) for m in model.model.modules())
    packed, _ = model.score_pairs(pairs)
    assert np.abs(packed - plain).max() < 0.02
    assert reranker(folder).prepare_for_serving() is None  # float32


def test_the_rerank_scheduler_prepares_its_model_waiting_for_requests_first() -> None:
    from nvrag.reranker.scheduler import RerankScheduler
    from tests.reranker.fakes import SharedWords

    class Prepared(SharedWords):
        def prepare_for_serving(self, busy: Any = None) -> str | None:
            self.busy = busy
            return "prepared"

    inner = Prepared()
    scheduler = RerankScheduler(inner)
    try:
        assert scheduler.prepare_for_serving() == "prepared"
        assert inner.busy is not None and inner.busy() is False  # the queue's own: nothing queued
    finally:
        scheduler.queue.close()
    assert SharedWords().prepare_for_serving() is None  # by default nothing to prepare

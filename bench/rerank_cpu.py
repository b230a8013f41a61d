"""What reranking costs per candidate on this CPU, for both reranker styles, nvrag against each reference, in
one run:

    python bench/rerank_cpu.py [--candidates 50] [--llm-candidates 20] [--max-length 512] [--threads 2]

Four models: the shared fixtures (tiny: the cost floor, tokenising and overheads), and random checkpoints of
the real shapes written by transformers: ms-marco-MiniLM-L6-v2's (BertForSequenceClassification, 6 layers,
hidden 384) and Qwen3-Reranker-0.6B's (Qwen3ForCausalLM, 28 layers, hidden 1024, 16/8 heads of 128,
intermediate 3072, the real 151,669-token vocabulary, tied embeddings, bfloat16 weights as the hub ships them).

One query (NFCorpus's first) and its candidates (the first NFCorpus documents, title + " " + text, cut at
--max-length tokens per pair) are scored, models loaded and warmed up first, so the time is a search's added
latency. nvrag runs its default (bfloat16 on a CPU with native bf16), the same prepacked as `nvrag serve` runs
it once ready ("served"), and float32; the references are
sentence-transformers' CrossEncoder.predict (float32, its default) and the Qwen3-Reranker model card's
transformers code (float32, one left-padded batch, as the card does). Reported per model and path: ms per
candidate, tokens/s, GFLOP/s of the useful matmul work and its share of this machine's matmul peak of that dtype
(measured in the same run), the speed-up over the reference, and the largest score difference from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cpu_embed import documents, matmul_peaks
from decoder_cpu import SHAPE as QWEN3_06B

REPO = Path(__file__).resolve().parent.parent
FAMILY = REPO.parent / "shared" / "fixtures" / "family"
QUERIES = REPO.parent / "shared" / "data" / "nfcorpus" / "queries.jsonl"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}
QWEN06 = {k: v for k, v in QWEN3_06B.items() if k != "vocab_size"}  # Qwen3-Reranker-0.6B = Qwen3-Embedding-0.6B


def write_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=1, **MINILM)
    BertForSequenceClassification(config).save_pretrained(folder)
    _tokenizer(folder, "bert-cross-encoder")
    data = json.loads((folder / "config.json").read_text())
    data["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def write_qwen(folder: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=151669, max_position_embeddings=40960, tie_word_embeddings=True, **QWEN06)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    _tokenizer(folder, "qwen3-reranker")
    return folder


def _tokenizer(folder: Path, style: str) -> None:
    for name in TOKENIZER_FILES:
        if (FAMILY / style / name).is_file():
            (folder / name).write_bytes((FAMILY / style / name).read_bytes())


def flops(kind: str, shape: dict[str, int], lengths: list[int]) -> float:
    """Matmul FLOPs on the real tokens: projections and MLP per token, attention per pair of tokens (half of
    them for causal attention)."""
    h, inner, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    if kind == "cross-encoder":
        per_token = 2 * (4 * h * h + 2 * h * inner) * layers
        return float(per_token * sum(lengths) + sum(4 * n * n * h * layers for n in lengths))
    q = shape["num_attention_heads"] * shape["head_dim"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    per_token = 2 * (h * q + 2 * h * kv + q * h + 3 * h * inner) * layers
    return float(per_token * sum(lengths) + sum(2 * n * n * q * layers for n in lengths))


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def cross_encoder_reference(folder: Path, max_length: int) -> Callable[[str, list[str]], np.ndarray]:
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(folder), device="cpu", max_length=max_length, model_kwargs={"dtype": torch.float32})
    return lambda query, docs: np.asarray(model.predict([(query, d) for d in docs]))


def qwen_reference(folder: Path, max_length: int) -> Callable[[str, list[str]], np.ndarray]:
    """The model card's code: prefix + formatted pair (truncated) + suffix, one left-padded batch, P(yes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nvrag.reranker.llm import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, format_pair

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")

    def score(query: str, docs: list[str]) -> np.ndarray:
        pairs = [format_pair(DEFAULT_INSTRUCTION, query, d) for d in docs]
        inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix) - len(suffix))  # fmt: skip
        inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
        batch = tokenizer.pad(inputs, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits[:, -1, :]
        pair = torch.stack([logits[:, no], logits[:, yes]], dim=1)
        return torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().numpy()

    return score


def measure(
    label: str, folder: Path, shape: dict[str, int] | None, query: str, docs: list[str], args: Any, peaks: Any
) -> list[dict[str, Any]]:
    from nvrag.reranker import load_reranker

    rows = []
    repeats = 1 if label.endswith("real shape") and "qwen" in label else 2
    scores: dict[str, np.ndarray] = {}
    for dtype in ("bfloat16", "float32"):
        reranker = load_reranker(folder, dtype=dtype, max_length=args.max_length)
        reranker.score(query, docs[:2])  # load and warm up
        seconds, got = best_of(lambda r=reranker: r.score(query, docs), repeats)
        scores[dtype] = got
        lengths = [len(p.ids) for p in reranker.encode(query, docs, None)]
        rows.append({"model": label, "path": f"nvrag {dtype}", "seconds": seconds, "lengths": lengths,
                     "kind": reranker.info.kind, "dtype": dtype})  # fmt: skip
        if reranker.prepare_for_serving() is not None:  # what `nvrag serve` does once ready (bfloat16 on a CPU)
            reranker.score(query, docs[:2])
            seconds, scores[f"{dtype} prepacked"] = best_of(lambda r=reranker: r.score(query, docs), repeats)
            rows.append({"model": label, "path": f"nvrag {dtype} served", "seconds": seconds, "lengths": lengths,
                         "kind": reranker.info.kind, "dtype": dtype})  # fmt: skip
    kind = rows[0]["kind"]
    build = cross_encoder_reference if kind == "cross-encoder" else qwen_reference
    reference = build(folder, args.max_length)
    reference(query, docs[:2])
    seconds, expected = best_of(lambda: reference(query, docs), repeats)
    rows.append({"model": label, "path": "reference float32", "seconds": seconds, "lengths": rows[-1]["lengths"],
                 "kind": kind, "dtype": "float32"})  # fmt: skip
    for row in rows:
        n = len(row["lengths"])
        row["ms_per_candidate"] = 1000 * row["seconds"] / n
        row["tokens_per_s"] = sum(row["lengths"]) / row["seconds"]
        row["speedup_vs_reference"] = seconds / row["seconds"]
        if shape is not None:
            gflops = flops(kind, shape, row["lengths"]) / row["seconds"] / 1e9
            row["gflops"] = gflops
            row["share_of_peak"] = gflops / peaks[row["dtype"]]
        served = row["path"].endswith("served")
        ours = scores.get(row["dtype"] + (" prepacked" if served else "")) if row["path"].startswith("nvrag") else None
        row["max_abs_diff_vs_reference"] = float(np.abs(ours - expected).max()) if ours is not None else 0.0
        del row["lengths"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--llm-candidates", type=int, default=20, help="candidates for the real-shape LLM")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(args.threads)
    peaks = matmul_peaks(args.threads)
    query = json.loads(QUERIES.read_text(encoding="utf-8").splitlines()[0])["text"]
    docs = documents(args.candidates)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nvrag-rerank-bench-") as tmp:
        bert = write_bert(Path(tmp) / "minilm-l6-shape")
        qwen = write_qwen(Path(tmp) / "qwen3-reranker-0.6b-shape")
        runs = [
            ("cross-encoder fixture", FAMILY / "bert-cross-encoder", None, docs),
            ("cross-encoder MiniLM-L6 real shape", bert, MINILM, docs),
            ("qwen3-reranker fixture", FAMILY / "qwen3-reranker", None, docs),
            ("qwen3-reranker 0.6B real shape", qwen, QWEN06, docs[: args.llm_candidates]),
        ]
        for label, folder, shape, candidates in runs:
            measured = measure(label, folder, shape, query, candidates, args, peaks)
            rows += measured
            for row in measured:
                print(json.dumps(row), flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} on {args.threads} threads; matmul peaks GFLOP/s: "
          f"float32 {peaks['float32']:.0f}, bfloat16 {peaks['bfloat16']:.0f}")  # fmt: skip
    print(f"{'model':36} {'path':18} {'ms/cand':>8} {'tok/s':>8} {'GFLOP/s':>8} {'peak':>6} {'vs ref':>7} {'diff':>9}")
    for r in rows:
        gf = f"{r['gflops']:.0f}" if "gflops" in r else "-"
        share = f"{100 * r['share_of_peak']:.0f}%" if "share_of_peak" in r else "-"
        print(f"{r['model']:36} {r['path']:18} {r['ms_per_candidate']:8.2f} {r['tokens_per_s']:8.0f} {gf:>8} "
              f"{share:>6} {r['speedup_vs_reference']:6.2f}x {r['max_abs_diff_vs_reference']:9.2e}")  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps({"peaks": peaks, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""nvrag against NVIDIA's reference NV-Embed code on the CPU, whole process against whole process.

    python bench/nvembed_reference.py --reference-code DIR --reference-python PYTHON [--repeat 3]

DIR holds NVIDIA's remote code for nvidia/NV-Embed-v2 (``modeling_nvembed.py`` and ``configuration_nvembed.py``,
from the model's Hugging Face repository; they are not part of nvrag and must not be committed here). PYTHON is
an interpreter of a separate virtual environment with what that code needs, as NVIDIA recommends it:

    python3.11 -m venv ref && ref/bin/pip install torch==2.13.0 transformers==4.42.4 einops "datasets<3" \
        "pyarrow<16" "numpy<2" sentencepiece

The checkpoint and workload are bench/nvembed_cpu.py's (issue 14's shape, random weights in the real format;
96 texts, 84 of 30-200 tokens and 12 of 400-1,500). The reference runs as NVIDIA's model card shows it:
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` in float32, then ``model.encode(texts,
instruction="", max_length=32768)``, one text per call (its fastest setting on a CPU: nothing padded) and in
calls of 8. nvrag runs ``nvrag embed --input ... --output ...`` in float32 and bfloat16. Each is timed as a whole
process (best of --repeat) with its peak RSS; the vectors are compared (max |difference| and min cosine against
the reference one text at a time). Each side's fixed cost is measured too: the same process on one short text.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvembed_cpu import run, useful_flops, workload, write_checkpoint

RUNNER = """
import json, sys
import numpy as np, torch
from transformers import AutoModel
folder, texts_file, out, per_call = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads({threads})
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
texts = [json.loads(line) for line in open(texts_file, encoding="utf-8")]
parts = []
with torch.no_grad():
    for i in range(0, len(texts), per_call):
        parts.append(model.encode(texts[i : i + per_call], instruction="", max_length=32768).float())
vectors = torch.nn.functional.normalize(torch.cat(parts), p=2, dim=1)
np.save(out, vectors.numpy())
"""


def reference_folder(checkpoint: Path, code: Path, folder: Path) -> None:
    """The checkpoint as the reference loads it: its files, NVIDIA's code beside them, and the tokenizer's path
    (``text_config._name_or_path``, the hub name in the real config) pointing at the folder itself."""
    folder.mkdir()
    for path in checkpoint.iterdir():
        (folder / path.name).symlink_to(path)
    for name in ("modeling_nvembed.py", "configuration_nvembed.py"):
        if not (code / name).is_file():
            raise SystemExit(f"{code / name}: not found (NVIDIA's remote code for nvidia/NV-Embed-v2)")
        shutil.copy(code / name, folder / name)
    (folder / "config.json").unlink()
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    config["text_config"]["_name_or_path"] = str(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def compare(ours: np.ndarray, reference: np.ndarray) -> str:
    cosine = float(np.min(np.sum(ours * reference, axis=1)))
    return f"max |diff| {float(np.max(np.abs(ours - reference))):.1e}, min cosine {cosine:.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-code", type=Path, required=True)
    parser.add_argument("--reference-python", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        checkpoint, ref = tmp / "ckpt", tmp / "ref"
        write_checkpoint(checkpoint, args.seed)
        reference_folder(checkpoint, args.reference_code.resolve(), ref)
        texts = workload(args.seed)
        texts_file, one_file = tmp / "texts.jsonl", tmp / "one.jsonl"
        texts_file.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
        one_file.write_text(json.dumps("hello") + "\n", encoding="utf-8")
        runner = tmp / "reference_runner.py"
        runner.write_text(RUNNER.format(threads=threads), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NVRAG_DB": str(tmp / "db"), "TOKENIZERS_PARALLELISM": "false"}
        env["HF_MODULES_CACHE"] = str(tmp / "hf_modules")

        from nvrag.embedder.nvembed import NVEmbedEmbedder

        lengths = [len(ids) for ids in NVEmbedEmbedder(checkpoint).tokenize(texts, "")]
        tokens, flops = sum(lengths), useful_flops(lengths)

        def best(command: list[str]) -> tuple[float, float]:
            return min(run(command, env) for _ in range(args.repeat))

        rows: list[tuple[str, float, float, float]] = []  # label, seconds, peak MiB, fixed cost
        vectors: dict[str, np.ndarray] = {}
        for per_call in (1, 8):
            out = tmp / f"reference-{per_call}.npy"
            reference = [args.reference_python, str(runner), str(ref)]
            fixed, _ = best([*reference, str(one_file), str(tmp / "x.npy"), "1"])
            seconds, peak = best([*reference, str(texts_file), str(out), str(per_call)])
            label = "reference, one text per call" if per_call == 1 else "reference, 8 texts per call"
            rows.append((label, seconds, peak, fixed))
            vectors[label] = np.load(out)
        nvrag = [sys.executable, "-m", "nvrag", "embed", "--model-path", str(checkpoint)]
        for dtype in ("float32", "bfloat16"):
            out = tmp / f"nvrag-{dtype}.npy"
            fixed, _ = best([*nvrag, "hello", "--dtype", dtype])
            seconds, peak = best([*nvrag, "--input", str(texts_file), "--output", str(out), "--dtype", dtype])
            rows.append((f"nvrag {dtype}", seconds, peak, fixed))
            vectors[f"nvrag {dtype}"] = np.load(out)
    baseline = rows[0][1]
    exact = vectors["reference, one text per call"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {threads} CPUs, torch {torch.__version__}; "
        f"96 texts, {tokens} tokens, {flops / 1e9:.0f} GFLOP of useful matmul work; best of {args.repeat}"
    )
    print(
        "| path | whole process s | x the reference one text per call | fixed cost s (one short text) "
        "| peak MiB | vectors against the reference one text per call |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label, seconds, peak, fixed in rows:
        print(
            f"| {label} | {seconds:.2f} | {baseline / seconds:.2f} | {fixed:.2f} | {peak:.0f} "
            f"| {compare(vectors[label], exact)} |"
        )


if __name__ == "__main__":
    main()

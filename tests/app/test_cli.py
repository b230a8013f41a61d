"""The CLI in-process with the fake model and real LanceDB: outputs, JSON shapes, errors and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nvrag.app.cli import app
from nvrag.embedder.families import KNOWN

FAKE = "nvrag/fake-wordlen"
runner = CliRunner()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    rows = [
        {"id": "short", "text": "a b c"},
        {"id": "long", "text": "ccc dddd", "lang": "en"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.usefixtures("clean_env")
def test_index_search_info_json(tmp_path: Path, corpus: Path) -> None:
    db = str(tmp_path / "db")
    code, out, err = run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "index": "t",
        "documents": 2,
        "chunks_added": 2,
        "chunks_unchanged": 0,
        "chunks_removed": 0,
        "documents_removed": 0,
        "failed": 0,
        "reembedded": False,
        "interrupted": False,
        "failures": [],
        "skipped": {},
        "not_in_path": 0,
    }
    assert "model: nvrag/fake-wordlen as requested (license MIT)" in err

    code, out, err = run("search", "x", "--index", "t", "--db", db, "--instruction", "q", "-k", "2", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert [(h["rank"], h["doc_id"], h["score"]) for h in hits] == [(1, "short", 1.0), (2, "long", 0.0)]
    assert hits[1]["metadata"] == {"lang": "en"} and hits[1]["text"] == "ccc dddd"

    code, out, err = run("info", "--db", db, "--json")
    assert code == 0, err
    info = json.loads(out)
    (entry,) = info["indexes"]
    assert entry["rows"] == 2
    assert entry["manifest"]["model"] == FAKE and entry["manifest"]["dimension"] == 8
    decoders = {m.hub_id for m in KNOWN}
    assert {m["name"] for m in info["models"]} == {"all-MiniLM-L6-v2", "nvidia/NV-Embed-v2", FAKE} | decoders


@pytest.mark.usefixtures("clean_env")
def test_rerun_says_nothing_to_embed(tmp_path: Path, corpus: Path) -> None:
    db = str(tmp_path / "db")
    run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", db)
    code, _, err = run("index", str(corpus), "--index", "t", "--db", db)
    assert code == 0
    assert "index 't' is up to date: 2 documents, 2 chunks unchanged, nothing to embed" in err


@pytest.mark.usefixtures("clean_env")
def test_db_comes_from_the_environment(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVRAG_DB", str(tmp_path / "envdb"))
    assert run("index", str(corpus), "--index", "t", "--model", FAKE)[0] == 0
    assert (tmp_path / "envdb" / "t.lance").is_dir()


@pytest.mark.usefixtures("clean_env")
def test_input_failures_exit_1_and_are_listed(tmp_path: Path, corpus: Path) -> None:
    with corpus.open("a", encoding="utf-8") as f:
        f.write("{broken\n")
    code, _, err = run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", str(tmp_path / "db"))
    assert code == 1
    assert f"skipped {corpus.resolve()}:3: malformed JSON" in err
    assert "2 documents, 2 chunks added, 0 unchanged, 0 chunks removed, 1 failed" in err


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "{tmp}/missing", "--index", "t"], "error: {tmp}/missing: no such file or directory"),
        (
            ["search", "q", "--index", "nope"],
            "error: no index named 'nope' in {tmp}/db (indexes: none yet); build it first: nvrag index PATH "
            "--index nope",
        ),
        (
            ["search", "q"],
            "error: no index named 'default' in {tmp}/db (indexes: t); name one of them with --index NAME",
        ),
        (["search", "q", "--index", "t", "--model", "gpt"], "error: unknown model 'gpt'; known models: auto,"),
        (["search", "q", "--index", "t", "--task", "Nope"], "error: unknown task 'Nope'; known tasks: ArguAna"),
        (["search", "  ", "--index", "t"], "error: the query is empty"),
        (["index", "{tmp}/docs.jsonl", "--index", "bad name"], "error: invalid index name 'bad name'"),
        (
            ["search", "q", "--index", "t", "--model", "all-MiniLM-L6-v2"],
            "error: index 't' was built with nvrag/fake-wordlen; it cannot be searched or extended with "
            "all-MiniLM-L6-v2",
        ),
        (
            ["index", "{tmp}/docs.jsonl", "--index", "t", "--chunk-tokens", "10"],
            "error: index 't' was chunked with 64 tokens and 16 overlap; this run asks for --chunk-tokens 10 (with "
            "its default overlap, 2)",
        ),
        (
            ["index", "{tmp}/docs.jsonl", "--index", "t", "--engine", "spark"],
            "error: --engine 'spark': use local or ray",
        ),
        (
            ["index", "{tmp}/docs.jsonl", "--index", "t", "--engine", "ray", "--devices", "cpu,cpu"],
            "error: --devices is for the local engine; with --engine ray use --workers/--gpus-per-worker",
        ),
        (
            ["index", "{tmp}/docs.jsonl", "--index", "t", "--workers", "2"],
            "error: --ray-address, --workers and --gpus-per-worker need --engine ray",
        ),
        (
            ["index", "{tmp}/docs.jsonl", "--index", "new", "--model", "nvidia/NV-Embed-v2"],
            "error: nvidia/NV-Embed-v2 weights are not available locally (LocalEntryNotFoundError); download them "
            "with `huggingface-cli download nvidia/NV-Embed-v2` or point --model-path / NVRAG_NVEMBED_PATH at a "
            "folder",
        ),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path: Path, corpus: Path, args: list[str], message: str) -> None:
    db = str(tmp_path / "db")
    if "nope" not in args:
        run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", db)
    code, out, err = run(*[a.format(tmp=tmp_path) for a in args], "--db", db)
    assert code == 2
    assert err.startswith(message.format(tmp=tmp_path))
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""


@pytest.mark.usefixtures("clean_env")
def test_embed_to_npy_jsonl_and_from_stdin(tmp_path: Path) -> None:
    npy = tmp_path / "v.npy"
    code, _, err = run("embed", "a bb", "ccc", "--model", FAKE, "--output", str(npy))
    assert code == 0, err
    vectors = np.load(npy)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 8)
    np.testing.assert_allclose(vectors[1], np.eye(8, dtype=np.float32)[2])

    code, out, err = run("embed", "--model", FAKE, "--input", "-", input='"a"\n{"text": "bb"}\n')
    assert code == 0, err
    rows = [json.loads(line)["embedding"] for line in out.splitlines()]
    assert [int(np.argmax(r)) for r in rows] == [0, 1]

    code, out, _ = run("embed", "a", "--query", "--instruction", "dddd", "--model", FAKE)
    (row,) = [json.loads(line)["embedding"] for line in out.splitlines()]
    assert row[0] == pytest.approx(row[3]) and row[0] == pytest.approx(2**-0.5)


@pytest.mark.usefixtures("clean_env")
def test_embed_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\nnot json\n', encoding="utf-8")
    assert run("embed", "--model", FAKE, "--input", str(bad))[2].startswith(f"error: {bad} line 2: not JSON")
    assert run("embed", "--model", FAKE)[2].startswith("error: nothing to embed")
    assert run("embed", "x", "--task", "NQ", "--model", FAKE)[2].startswith("error: --task and --instruction apply")


def test_help_lists_commands_and_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for word in ("index", "search", "embed", "info", "Exit codes"):
        assert word in out


@pytest.mark.usefixtures("clean_env")
def test_search_modes_filters_and_parts_in_json(tmp_path: Path, corpus: Path) -> None:
    db = str(tmp_path / "db")
    run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", db)
    code, out, err = run(
        "search", "dddd", "--index", "t", "--db", db, "--mode", "hybrid", "--instruction", "q", "--json"
    )
    assert code == 0, err
    hits = json.loads(out)
    top = hits[0]
    # "q: dddd" -> e0 + e3: dense ranks "short" (e0) first, "long" (e2 + e3) second; BM25 finds only "long"
    assert (top["doc_id"], top["bm25_rank"], top["dense_rank"]) == ("long", 1, 2)
    assert top["score"] == pytest.approx(1 / 61 + 1 / 62, abs=1e-6)
    assert (hits[1]["doc_id"], hits[1]["bm25_rank"], hits[1]["score"]) == (
        "short",
        None,
        pytest.approx(1 / 61, abs=1e-6),
    )
    code, out, _ = run(
        "search", "x", "--index", "t", "--db", db, "--filter", "lang = en", "--json", "--instruction", "q"
    )
    assert [h["doc_id"] for h in json.loads(out)] == ["long"]
    code, _, err = run("search", "x", "--index", "t", "--db", db, "--filter", "lang ==", "--instruction", "q")
    assert code == 2 and err.startswith("error: cannot read the filter condition 'lang =='")
    code, _, err = run("search", "x", "--index", "t", "--db", db, "--filter", "lang = fr", "--instruction", "q")
    assert code == 0 and "no results: nothing matched the filter" in err
    code, _, err = run("search", "x", "--index", "t", "--db", db, "--mode", "sparse")
    assert code == 2 and err.startswith("error: unknown --mode 'sparse'")


@pytest.mark.usefixtures("clean_env")
def test_eval_writes_metrics_json_and_png(tmp_path: Path) -> None:
    from tests.evaluation.test_evaluate import write_dataset

    dataset = write_dataset(tmp_path / "tiny")
    outdir = tmp_path / "out"
    args = [
        "eval",
        str(dataset),
        "--model",
        FAKE,
        "--instruction",
        "q",
        "--db",
        str(tmp_path / "db"),
        "-o",
        str(outdir),
    ]
    code, out, err = run(*args)
    assert code == 0, err
    for name in ("nDCG@10", "MAP@100", "Recall@100", "MRR@10"):
        assert name in out
    assert "100.00" in out and "note: 1 queries have no judgements in the test split" in err
    metrics = json.loads((outdir / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["dataset"], metrics["model"], metrics["mode"]) == ("tiny", FAKE, "dense")
    assert metrics["metrics"] == {"nDCG@10": 1.0, "MAP@100": 1.0, "Recall@100": 1.0, "MRR@10": 1.0}
    assert set(metrics["per_query"]) == {"q1", "q2"} and metrics["per_query"]["q1"]["nDCG@10"] == 1.0
    assert (outdir / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(*args)
    assert code == 0 and "index 'eval-tiny-nvrag-fake-wordlen-doc': reused" in err
    code, _, err = run("eval", str(tmp_path / "nope"), "--model", FAKE, "--db", str(tmp_path / "db"))
    assert code == 2 and "not a directory; give a BEIR dataset folder" in err


@pytest.mark.usefixtures("clean_env")
def test_the_faiss_store_from_the_environment(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVRAG_STORE", "faiss")
    db = str(tmp_path / "db")
    assert run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", db)[0] == 0
    assert (tmp_path / "db" / "nvrag.sqlite").is_file() and (tmp_path / "db" / "t.faiss").is_file()
    code, out, err = run("search", "x", "--index", "t", "--db", db, "--instruction", "q", "-k", "2", "--json")
    assert code == 0, err
    assert [(h["doc_id"], h["score"]) for h in json.loads(out)] == [("short", 1.0), ("long", 0.0)]
    monkeypatch.setenv("NVRAG_STORE", "mongo")
    code, _, err = run("info", "--db", db)
    assert code == 2 and err.startswith("error: NVRAG_STORE='mongo': use lancedb or faiss")


@pytest.mark.usefixtures("clean_env")
def test_float16_vectors_from_the_cli(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "db")
    code, _, err = run("index", str(corpus), "--index", "h", "--model", FAKE, "--db", db, "--vector-dtype", "float16")
    assert code == 0, err
    (entry,) = json.loads(run("info", "--db", db, "--json")[1])["indexes"]
    assert entry["manifest"]["vector_dtype"] == "float16"
    monkeypatch.setenv("NVRAG_STORE", "faiss")
    code, _, err = run(
        "index", str(corpus), "--index", "h", "--model", FAKE, "--db", str(tmp_path / "f"), "--vector-dtype", "float16"
    )
    assert code == 2 and "FaissStore stores float32 vectors only" in err


@pytest.mark.usefixtures("clean_env")
def test_binary_quantisation_from_the_cli_is_pinned_and_changed_only_by_reembed(tmp_path: Path, corpus: Path) -> None:
    db = str(tmp_path / "db")
    code, _, err = run("index", str(corpus), "--index", "b", "--model", FAKE, "--db", db, "--quantize", "binary")
    assert code == 0, err
    (entry,) = json.loads(run("info", "--db", db, "--json")[1])["indexes"]
    assert (entry["manifest"]["quantization"], entry["manifest"]["vector_dtype"]) == ("binary", "float32")
    assert run("index", str(corpus), "--index", "plain", "--model", FAKE, "--db", db)[0] == 0
    found = [json.loads(run("search", "alpha beta", "--index", n, "--db", db, "--json")[1]) for n in ("b", "plain")]
    ranked = [[(h["doc_id"], h["chunk_no"], h["score"]) for h in hits] for hits in found]
    assert ranked[0] == ranked[1] and ranked[0]  # a small index: every row is a candidate, rescored exactly
    code, _, err = run("index", str(corpus), "--index", "b", "--db", db)  # no storage options: the index's own
    assert code == 0, err
    code, _, err = run("index", str(corpus), "--index", "b", "--db", db, "--quantize", "none")
    assert code == 2
    assert err.strip() == (
        "error: index 'b' stores float32 vectors with quantization 'binary'; this run asks for --quantize none: "
        "leave --vector-dtype and --quantize out to keep them, or add --reembed to rebuild it"
    )
    code, out, err = run("index", str(corpus), "--index", "b", "--db", db, "--quantize", "none", "--reembed", "--json")
    assert code == 0, err
    assert json.loads(out)["reembedded"] is True
    entries = json.loads(run("info", "--db", db, "--json")[1])["indexes"]
    assert [e["manifest"]["quantization"] for e in entries if e["manifest"]["name"] == "b"] == ["none"]
    code, _, err = run("index", str(corpus), "--index", "x", "--model", FAKE, "--db", db, "--quantize", "int4")
    assert code == 2 and err.strip() == "error: unknown quantization 'int4'; use none or binary"


@pytest.mark.usefixtures("clean_env")
def test_devices_option_runs_replicas_and_checks_names(tmp_path: Path, corpus: Path) -> None:
    single = run("embed", "a bb", "ccc dddd", "--model", FAKE)[1]
    code, pooled, err = run("embed", "a bb", "ccc dddd", "--model", FAKE, "--devices", "cpu,cpu")
    assert code == 0, err
    assert pooled == single
    code, _, err = run("embed", "x", "--model", FAKE, "--devices", "gpu0")
    assert code == 2 and err.startswith("error: --devices: 'gpu0' is not a device")
    code, _, err = run(
        "index", str(corpus), "--index", "r", "--model", FAKE, "--db", str(tmp_path / "db"), "--devices", "cpu,cpu"
    )
    assert code == 0, err


@pytest.mark.usefixtures("clean_env")
def test_dtype_reaches_the_model_is_recorded_and_a_cpu_float16_is_refused(tmp_path: Path, corpus: Path) -> None:
    db = str(tmp_path / "db")
    minilm = ["--model", "all-MiniLM-L6-v2", "--db", db]
    code, _, err = run("index", str(corpus), "--index", "fast", *minilm, "--dtype", "bfloat16")
    assert code == 0, err
    code, _, err = run("index", str(corpus), "--index", "exact", *minilm, "--dtype", "float32")
    assert code == 0, err
    code, out, _ = run("info", "--db", db, "--json")
    recorded = {i["manifest"]["name"]: i["manifest"]["compute_dtype"] for i in json.loads(out)["indexes"]}
    assert recorded == {"exact": "float32", "fast": "bfloat16"}
    code, out, _ = run("search", "a b c", "--index", "exact", "--db", db, "--dtype", "bf16", "--json")
    assert code == 0 and json.loads(out)[0]["doc_id"] == "short"  # bf16 queries search a float32 index
    for command in (
        ["index", str(corpus), "--index", "other", *minilm],
        ["search", "x", "--index", "exact", "--db", db],
    ):
        code, _, err = run(*command, "--dtype", "float16")
        assert code == 2
        assert err.strip().splitlines()[-1] == (
            "error: --dtype float16 is for GPUs (CPUs compute it slowly or not at all); use bfloat16"
        )


@pytest.mark.usefixtures("clean_env")
def test_queries_on_the_cpu_are_float32_unless_another_dtype_is_asked_for(tmp_path: Path, corpus: Path) -> None:
    """A bfloat16 index still gets exact (float32) query vectors by default: a query is a few tokens."""
    from nvrag.app.settings import Settings
    from nvrag.app.wiring import build_retriever, open_store

    db = str(tmp_path / "db")
    code, _, err = run(
        "index", str(corpus), "--index", "fast", "--model", "all-MiniLM-L6-v2", "--db", db, "--dtype", "bf16"
    )
    assert code == 0, err
    settings = Settings.from_env(db=db)
    retriever = build_retriever(settings, open_store(settings), "fast", None)
    assert retriever.embedder.info.compute_dtype == "float32"
    asked = Settings.from_env(db=db, dtype="bfloat16")
    assert build_retriever(asked, open_store(asked), "fast", None).embedder.info.compute_dtype == "bfloat16"

    def scores(*extra: str) -> list[float]:
        code, out, err = run("search", "c d", "--index", "fast", "--db", db, "--json", *extra)
        assert code == 0, err
        return [hit["score"] for hit in json.loads(out)]

    default = scores()
    assert default == scores("--dtype", "float32")
    assert not np.allclose(default, scores("--dtype", "bfloat16"), atol=1e-6, rtol=0)
    embedded = {
        dtype: run("embed", "c d", "--query", "--model", "all-MiniLM-L6-v2", *(("--dtype", dtype) if dtype else ()))
        for dtype in ("", "float32", "bfloat16")
    }
    assert all(code == 0 for code, _, _ in embedded.values())
    assert embedded[""][1] == embedded["float32"][1] != embedded["bfloat16"][1]


def test_info_says_what_the_cpu_computes_in_and_survives_a_gpu_only_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nvrag.embedder.dtypes import choose_dtype

    for key in [k for k in os.environ if k.startswith("NVRAG_")]:
        monkeypatch.delenv(key)
    db = str(tmp_path / "db")
    default = choose_dtype(None, "cpu")
    code, out, err = run("info", "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out)["cpu_dtype"] == {"default": default.name, "reason": default.reason}
    code, out, _ = run("info", "--db", db)
    assert f"dtype on this CPU: {default.name} ({default.reason}); --dtype float32 for exact vectors" in out
    monkeypatch.setenv("NVRAG_DTYPE", "bfloat16")
    asked = choose_dtype("bfloat16", "cpu").reason  # "as requested" (on a CPU without bfloat16: what it computes in)
    assert json.loads(run("info", "--db", db, "--json")[1])["cpu_dtype"]["reason"] == asked
    monkeypatch.setenv("NVRAG_DTYPE", "float16")  # for GPUs: the listing still works and shows the CPU's default
    code, out, err = run("info", "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out)["cpu_dtype"]["default"] == default.name


@pytest.mark.parametrize("command", [("serve", "--model", "nvrag/fake-wordlen"), ("ui",)])
def test_serve_and_ui_on_a_port_in_use_are_one_line_and_exit_code_4(tmp_path: Path, command: tuple[str, ...]) -> None:
    import socket

    from tests.e2e.test_cli_e2e import nvrag

    # another process listening there (a second `nvrag serve` meets the first one's socket listening from the
    # moment it was bound, before its models load)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = nvrag(*command, "--port", str(port), db=tmp_path / "db", timeout=300)
    assert done.returncode == 4, done.stderr
    assert done.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use by another process; pass --port N"


@pytest.mark.usefixtures("clean_env")
def test_options_a_mode_does_not_use_say_so(tmp_path: Path, corpus: Path) -> None:
    db = str(tmp_path / "db")
    assert run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", db)[0] == 0
    code, _, err = run("search", "ccc", "--index", "t", "--db", db, "--mode", "bm25", "--task", "SciFact")
    assert code == 0 and "--mode bm25 matches words and embeds no query; --task/--instruction are not used" in err
    code, _, err = run("search", "ccc", "--index", "t", "--db", db, "--rrf-k", "10")
    assert code == 0 and "--rrf-k applies to --mode hybrid; --mode dense does not use it" in err
    code, _, err = run("search", "ccc", "--index", "t", "--db", db, "--mode", "hybrid", "--rrf-k", "10")
    assert code == 0 and "--rrf-k" not in err
    code, _, err = run("search", "ccc", "--index", "t", "--db", db, "--rerank-instruction", "x")
    assert code == 2 and "--rerank-depth and --rerank-instruction apply with --rerank" in err


def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source() -> None:
    """A command's description is reflowed: the docstring's own line breaks (at 120 columns) used to survive, and
    Rich wrapped each line again, leaving a word or two on every other line."""
    wide = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["index", "--help"])
    assert wide.exit_code == 0
    assert "the report is also written as JSON next to the index" in wide.stdout

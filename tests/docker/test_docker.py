"""What can be tested of docker/ without a Docker engine: hadolint, the entrypoint script, the images' promises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKER = REPO / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.cuda"]


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_user_have_a_health_check_and_no_weights(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    assert "\nUSER 10001\n" in text and "HEALTHCHECK" in text
    copies = [line for line in text.splitlines() if line.startswith("COPY")]
    assert not any("safetensors" in line or "NV-Embed" in line or "models" in line for line in copies)


def test_compose_binds_loopback_and_keeps_the_index_in_a_volume() -> None:
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    assert '"127.0.0.1:7860:7860"' in text and "nvrag-data:/data" in text
    assert "target: /models/NV-Embed-v2\n        read_only: true" in text  # weights mounted read-only at run time


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint with a stand-in `nvrag` that prints the arguments it was given, one call per line."""
    stub = tmp_path / "nvrag-stub"
    stub.write_text('#!/bin/sh\necho "nvrag $*"\n[ -n "${NVRAG_API_KEY:-}" ] && echo "key $NVRAG_API_KEY"\nexit 0\n')
    stub.chmod(0o755)
    base = {
        "PATH": os.environ["PATH"],
        "NVRAG_BIN": str(stub),
        "NVRAG_DB": str(tmp_path / "data"),
        "NVRAG_DATA_DIR": str(tmp_path),
        "NVRAG_HEALTH_FILE": str(tmp_path / "health-url"),
    }
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=base | env, check=False)


def test_default_starts_the_ui_on_all_interfaces_of_the_container(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "nvrag ui --host 0.0.0.0 --port 7860\n"
    assert (tmp_path / "data").is_dir()
    assert (tmp_path / "health-url").read_text() == "http://127.0.0.1:7860/\n"  # what the health check fetches
    assert run(tmp_path, "ui", "--index", "x", NVRAG_PORT="9000").stdout == (
        "nvrag ui --host 0.0.0.0 --port 9000 --index x\n"
    )


def test_demo_mode_indexes_the_demo_corpus_first(tmp_path: Path) -> None:
    done = run(tmp_path, NVRAG_DEMO="1", NVRAG_DEMO_CORPUS="/corpus.jsonl")
    assert done.stdout.splitlines() == [
        "nvrag index /corpus.jsonl --index demo",
        "nvrag ui --host 0.0.0.0 --port 7860 --index demo",
    ]


def test_serve_makes_a_key_once_keeps_it_private_and_checks_health(tmp_path: Path) -> None:
    first = run(tmp_path, "serve", NVRAG_DEMO="1")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "api-key"
    key = key_file.read_text()
    assert len(key) == 48 and int(key, 16) >= 0  # 24 random bytes in hex, no newline
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.stdout.splitlines() == ["nvrag serve --host 0.0.0.0 --port 8000 --index demo", f"key {key}"]
    assert first.stderr == (
        f"nvrag-entrypoint: no NVRAG_API_KEY given: made one, kept in {key_file} (read it with: cat {key_file})\n"
    )
    assert (tmp_path / "health-url").read_text() == "http://127.0.0.1:8000/health\n"
    again = run(tmp_path, "serve", "--ui", NVRAG_API_PORT="9000")
    assert again.stdout.splitlines() == ["nvrag serve --host 0.0.0.0 --port 9000 --ui", f"key {key}"]
    assert again.stderr == ""  # the same key, nothing new said
    given = run(tmp_path, "serve", NVRAG_API_KEY="k" * 20)
    assert given.stdout.splitlines()[1] == "key " + "k" * 20


def test_serve_without_a_writable_place_for_the_key_says_what_to_do(tmp_path: Path) -> None:
    done = run(tmp_path, "serve", NVRAG_DATA_DIR=str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"nvrag-entrypoint: cannot write {tmp_path / 'missing' / 'api-key'}: set NVRAG_API_KEY or mount a writable "
        f"volume at {tmp_path / 'missing'}\n"
    )


def test_other_commands_pass_through(tmp_path: Path) -> None:
    assert run(tmp_path, "search", "a query", "--index", "x").stdout == "nvrag search a query --index x\n"


def test_mistakes_in_the_environment_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = run(tmp_path, NVRAG_NVEMBED_PATH=str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        f"nvrag-entrypoint: NVRAG_NVEMBED_PATH={tmp_path / 'nowhere'} has no config.json: mount the NV-Embed-v2 "
        "checkpoint folder there\n"
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    bad_db = run(tmp_path, NVRAG_DB=str(blocker / "db"))
    assert bad_db.returncode == 2
    assert bad_db.stderr.startswith(f"nvrag-entrypoint: cannot create the data directory {blocker / 'db'}")


def test_the_entrypoint_runs_the_real_cli(tmp_path: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "NVRAG_DB": str(tmp_path / "db")}
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), "info", "--json"], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["db"] == str(tmp_path / "db")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_is_in_the_build_context(dockerfile: Path) -> None:
    """.dockerignore sends only what it re-includes (``*`` then ``!path``): a COPY of anything else fails the
    build, which nothing else here runs (make docker-test does, in a real engine)."""
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words[1:-1] if not w.startswith("--")]:
            parts = Path(source).parts
            assert any("/".join(parts[:i]) in included for i in range(1, len(parts) + 1)), (
                f"{dockerfile.name} copies {source}, which .dockerignore leaves out of the context"
            )

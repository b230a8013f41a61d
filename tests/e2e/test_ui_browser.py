"""The web UI in a real browser: Debian's Chromium driven by Playwright against `nvrag ui` on a free port.

Chromium comes from the system (/usr/bin/chromium; `.ci/run` installs it with apt), never from a download.
Without it these tests skip, unless NVRAG_REQUIRE_BROWSER=1 (as in CI), where its absence is a failure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, demo_copy
from tests.e2e.test_cli_e2e import nvrag
from tests.e2e.ui_server import running_ui

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

if not CHROMIUM.exists():
    if os.environ.get("NVRAG_REQUIRE_BROWSER") == "1":
        raise RuntimeError("NVRAG_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing: apt-get install -y chromium")
    pytest.skip("no /usr/bin/chromium (apt-get install -y chromium); .ci/run installs it", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui_db(built_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_copy(built_demo, tmp_path_factory)  # `nvrag index` of the demo corpus (tests/conftest.py)


@pytest.fixture(scope="module")
def server(ui_db: Path) -> Iterator[str]:
    with running_ui(ui_db, "demo") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module (a launch is ~2 s); each test gets a fresh context (its own cookies and storage,
    as a new browser would have)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server: str, browser: Any) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.goto(server, wait_until="networkidle")
    yield tab
    context.close()


def ask(page: object, query: str) -> None:
    box = page.locator("#query textarea, #query input").first  # type: ignore[attr-defined]
    box.fill(query)
    box.press("Enter")


def test_query_shows_the_expected_top_hit(page: object) -> None:
    ask(page, "compute a SHA-256 digest of a file")
    first = page.locator("[data-testid=hit]").first  # type: ignore[attr-defined]
    first.wait_for(timeout=120_000)
    assert first.get_attribute("data-doc-id") == "hashlib.file_digest"
    assert "<mark>digest</mark>" in first.inner_html()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-search.png"), full_page=False)  # type: ignore[attr-defined]


def test_changing_the_task_and_mode_still_searches(page: object) -> None:
    page.locator("#task input").first.click()  # type: ignore[attr-defined]
    page.get_by_role("option", name="SciFact").click()  # type: ignore[attr-defined]
    page.get_by_label("hybrid").check()  # type: ignore[attr-defined]
    ask(page, "create a temporary directory")
    first = page.locator("[data-testid=hit]").first  # type: ignore[attr-defined]
    first.wait_for(timeout=120_000)
    assert first.get_attribute("data-doc-id") == "tempfile.TemporaryDirectory"
    assert "(dense #" in first.inner_text()


def test_bad_filter_shows_a_message(page: object) -> None:
    page.locator("#filters textarea, #filters input").first.fill("lang ==")  # type: ignore[attr-defined]
    ask(page, "hash")
    error = page.locator("[data-testid=error]")  # type: ignore[attr-defined]
    error.wait_for(timeout=120_000)
    assert error.inner_text().startswith("Bad filter: cannot read the filter condition 'lang =='")


def test_upload_then_find_it(page: object, tmp_path: Path) -> None:
    note = tmp_path / "zebra-notes.md"
    note.write_text("# Zebra crossings\nPedestrians cross the road at zebra crossings painted in stripes.\n", "utf-8")
    page.get_by_role("tab", name="Index").click()  # type: ignore[attr-defined]
    page.locator("#upload input[type=file]").set_input_files(str(note))  # type: ignore[attr-defined]
    page.locator("#upload-button").click()  # type: ignore[attr-defined]
    report = page.locator("#report")  # type: ignore[attr-defined]
    report.get_by_text("Indexed into").wait_for(timeout=180_000)
    assert "1 documents, 1 chunks added" in report.inner_text()
    page.get_by_role("tab", name="Search").click()  # type: ignore[attr-defined]
    ask(page, "where do pedestrians cross the road")
    first = page.locator("[data-testid=hit]").first  # type: ignore[attr-defined]
    first.wait_for(timeout=120_000)
    digest = hashlib.sha256(note.read_bytes()).hexdigest()[:12]
    assert first.get_attribute("data-doc-id") == f"upload:zebra-notes.{digest}.md"  # the uploads' own namespace


def test_an_index_built_by_the_cli_appears_after_a_reload(page: object, ui_db: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Field notes\nOwls hunt at night over the meadow.\n", encoding="utf-8")
    built = nvrag("index", str(notes), "--index", "field-notes", "--model", "all-MiniLM-L6-v2", db=ui_db)
    assert built.returncode == 0, built.stderr
    page.reload(wait_until="networkidle")  # type: ignore[attr-defined]
    page.locator("#index input").first.click()  # type: ignore[attr-defined]
    page.get_by_role("option", name="field-notes").click()  # type: ignore[attr-defined]
    ask(page, "which bird hunts at night")
    first = page.locator("[data-testid=hit]").first  # type: ignore[attr-defined]
    first.wait_for(timeout=120_000)
    assert first.get_attribute("data-doc-id") == "notes.md"


def test_the_documents_tab_lists_filters_and_deletes_after_confirmation(page: object) -> None:
    page.get_by_role("tab", name="Documents").click()  # type: ignore[attr-defined]
    page.locator("#contains textarea, #contains input").first.fill("hashlib.n")  # type: ignore[attr-defined]
    page.locator("#list-documents").click()  # type: ignore[attr-defined]
    table = page.locator("#documents")  # type: ignore[attr-defined]
    first_cell = table.locator("[data-testid=cell-0-0]")
    first_cell.wait_for(timeout=120_000)
    assert first_cell.inner_text().strip() == "hashlib.new"
    assert "hashlib.file_digest" not in table.inner_text()  # filtered by the id
    page.locator("#delete-id textarea, #delete-id input").first.fill("hashlib.new")  # type: ignore[attr-defined]
    page.locator("#delete-document").click()  # type: ignore[attr-defined]
    said = page.locator("#deleted")  # type: ignore[attr-defined]
    said.get_by_text("Tick the confirmation box").wait_for(timeout=60_000)  # nothing deleted without it
    page.locator("#delete-confirm input").click()  # type: ignore[attr-defined]
    page.locator("#delete-document").click()  # type: ignore[attr-defined]
    said.get_by_text("from demo (1 chunks)").wait_for(timeout=60_000)
    assert "hashlib.new" in said.inner_text() and "(1 chunks)" in said.inner_text()
    assert "hashlib.new" not in [line.strip() for line in table.inner_text().splitlines()]


def test_the_rerank_toggle_reorders_results_in_the_page(ui_db: Path, browser: Any) -> None:
    """`nvrag ui --rerank-model DIR`: the toggle is shown, and ticked, each card shows its rerank score and the
    rank the first stage gave it; a server without a reranker shows no toggle."""
    reranker = REPO.parent / "shared" / "fixtures" / "family" / "bert-cross-encoder"
    with running_ui(ui_db, "demo", "--rerank-model", str(reranker)) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.goto(url, wait_until="networkidle")
        toggle = tab.locator("#rerank input[type=checkbox]")
        assert "bert-cross-encoder" in tab.locator("#rerank").inner_text()
        toggle.check()
        ask(tab, "compute a SHA-256 digest of a file")
        first = tab.locator("[data-testid=hit]").first
        first.wait_for(timeout=120_000)
        assert "rerank " in first.inner_text() and "(was #" in first.inner_text()
        context.close()


def test_without_a_reranker_the_toggle_is_hidden(page: object) -> None:
    assert (
        page.locator("#rerank input[type=checkbox]").count() == 0
        or not page.locator(  # type: ignore[attr-defined]
            "#rerank input[type=checkbox]"
        ).is_visible()
    )

"""A property-based fuzz run of `nvrag serve` against its own OpenAPI schema (schemathesis, loopback only):
whatever the schema lets a client send, the server answers without a 500, in OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.api.test_server import KEY, serve
from tests.conftest import DEMO_CORPUS
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("fuzz") / "db"
    built = nvrag("index", str(DEMO_CORPUS), "--index", "demo", "--model", "nvrag/fake-wordlen", db=db)
    assert built.returncode == 0, built.stderr
    yield from serve(db, "--model", "nvrag/fake-wordlen", "--api-key", KEY)


SENT: list[tuple[str, str, int]] = []


def check(case: Any) -> None:
    for headers in ({"Authorization": f"Bearer {KEY}"}, {}):
        response = case.call(headers=headers, timeout=120)
        SENT.append((case.method, case.path, response.status_code))
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error["message"], str) and error["message"]
        if not headers and case.path not in ("/health", "/ready", "/live"):  # the probes need no key
            assert response.status_code == 401, (case.method, case.path, response.text[:200])


def test_no_request_the_schema_allows_gets_a_server_error(fuzzed: str) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {"POST /v1/embeddings", "POST /v1/search"}
    for operation in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]  # valid requests; then, where there is a body, invalid ones
        if operation.method.upper() == "POST":
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)
            run = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
            try:
                run(given(case=strategy)(check))()
            except Unsatisfiable:  # a route with no schema'd body (documents: parsed by hand) has no invalid form
                assert mode == schemathesis.GenerationMode.NEGATIVE and "documents" in operation.path
    statuses = {status for _, _, status in SENT}
    per_route = {path: sum(1 for _, p, _ in SENT if p == path) for path in ("/v1/embeddings", "/v1/search")}
    assert min(per_route.values()) >= 80 and {200, 401, 422} <= statuses, (per_route, statuses)

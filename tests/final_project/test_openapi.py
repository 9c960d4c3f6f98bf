"""The OpenAPI file tells the truth: a Schemathesis run (examples, coverage, fuzzing and
the stateful phase) against a real uvicorn finds no 500 and no undocumented status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.final_project.conftest import APP, final_env
from tests.servers import ROOT, Uvicorn, forget_keys

pytestmark = pytest.mark.slow

UNLIMITED = {"/health", "/health/ready"}
SECURED = {"/users/me", "/users/{user_id}", "/audit", "/auth/logout"}


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[Uvicorn]:
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    with Uvicorn(APP, env=final_env(redis_url=redis_url, redis_prefix=prefix)) as server:
        yield server
    forget_keys(redis_url, prefix)


def test_every_operation_documents_the_errors_it_can_return(server: Uvicorn) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            where = f"{method.upper()} {path}"
            if path not in UNLIMITED:
                assert "429" in documented, where
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in documented, where
            if "requestBody" in operation:
                assert "413" in documented, where
            secured = path in SECURED or (path == "/users" and method == "get")
            if secured:
                assert {"401"} <= documented, where
                assert operation.get("security"), where
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert "application/problem+json" in response["content"], (where, status)
    assert schema["paths"]["/health/ready"]["get"]["responses"].keys() >= {"200", "503"}


def test_schemathesis_finds_no_500_and_no_undocumented_status(
    server: Uvicorn, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text("[cache]\nenabled = false\n")  # no .schemathesis/ left in the repo
    args = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", f"{server.url}/openapi.json",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", "all",
        # Schema-valid yet refused by design: a `.test` email domain, a taken email.
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20260117"),
        # The sleep demos wait up to 5 s per call by design; their own tests cover them.
        "--exclude-path-regex", "^/demo/",
        "--generation-database", "none",
        "--request-timeout", "10",
        "--workers", "2",
        "--no-color",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.final_project.schemathesis_hooks",
        "FINAL_PROJECT_URL": server.url,
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "✅ Stateful" in report, report
    assert re.search(r"(\d+) generated, \1 passed", report), report

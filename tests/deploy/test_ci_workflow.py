"""The GitHub workflow: valid by GitHub's schema, and it runs what .ci/run runs,
on every Python the project supports, with Redis and PostgreSQL beside it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import VENV_BIN
from tests.servers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    # vendor.github-workflows is bundled with check-jsonschema: it works offline.
    command = [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    return subprocess.run([*command, str(path)], capture_output=True, text=True)


def test_the_workflow_validates_against_the_github_workflow_schema(tmp_path: Path) -> None:
    result = validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the schema does check: a job without runs-on fails it.
    bad = tmp_path / "ci.yml"
    bad.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: make test\n")
    assert validate(bad).returncode != 0


def test_the_workflow_runs_check_and_test_on_each_python_with_both_servers() -> None:
    job: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]
    commands = [step.get("run", "") for step in job["steps"]]

    assert job["strategy"]["matrix"]["python-version"] == ["3.11", "3.12", "3.13"]
    assert set(job["services"]) == {"redis", "postgres"}
    assert job["env"]["CI"] == "true"
    assert any(command.startswith("make check") for command in commands)
    assert any(command.startswith("make test") for command in commands)

"""What the deployment files (Dockerfile, compose.yaml, nginx, the CI workflow) need
in their tests: their contents parsed, and the commands they name run as processes.

No image is built here (there is no container runtime): each command line runs
outside a container, from the repository root, which the image's WORKDIR mirrors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import ROOT
from tests.waiting import wait_until_sync

VENV_BIN = Path(sys.executable).parent
# The image puts its virtual environment first on PATH; here that is .venv/bin.
PATH = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments))
            pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD (or HEALTHCHECK CMD); fails on shell form."""
    command = json.loads(arguments)
    assert isinstance(command, list), f"not exec form: {arguments}"
    assert all(isinstance(part, str) for part in command)
    return command


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


class Process:
    """A command line as a child process with its output in a file, stopped with SIGTERM."""

    def __init__(self, command: list[str], *, env: Mapping[str, str], cwd: Path = ROOT) -> None:
        self.command = command
        self.log = tempfile.NamedTemporaryFile(prefix="deploy-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)

    def __str__(self) -> str:
        return f"{shlex.join(self.command)}\n{self.output()}"


@contextlib.contextmanager
def running(command: list[str], *, env: Mapping[str, str], ready_url: str) -> Iterator[Process]:
    """Start `command`, and yield it once `ready_url` answers 200."""
    process = Process(command, env=env)

    def ready() -> bool:
        assert process.alive(), f"exited early: {process}"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(ready_url, timeout=1).status_code == 200
        return False

    try:
        wait_until_sync(ready, f"{ready_url} = 200 ({process})", timeout=60)
        yield process
    finally:
        process.stop()

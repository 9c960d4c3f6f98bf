"""Grade real code: reference apps and starters copied into a throw-away workspace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from learn.course import ROOT, WEEKS

DAY_LINE = re.compile(r"^  (week\d/day\d)\s.*?\s(\d+) of\s+(\d+)", re.M)


@dataclass
class Grade:
    code: int
    output: str

    @property
    def days(self) -> dict[str, tuple[int, int]]:
        """Each day the grader reported, and how many of its checks passed."""
        return {day: (int(p), int(t)) for day, p, t in DAY_LINE.findall(self.output)}

    @property
    def failing_days(self) -> set[str]:
        return {day for day, (passed, total) in self.days.items() if passed < total}


def grade(week: str, folder: Path, redis_url: str | None = None) -> Grade:
    """`make grade-<week>` on `folder`, in a process of its own as a learner runs it."""
    env = {**os.environ, "TEST_REDIS_URL": redis_url} if redis_url else dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-m", "learn.grade", week, str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=False,
    )
    return Grade(done.returncode, done.stdout + done.stderr)


def copy_of_reference(week: str, workspaces: Path) -> Path:
    """The reference app of `week`, as a learner's workspace folder holding it."""
    folder = workspaces / week
    shutil.copytree(
        ROOT / WEEKS[week].reference, folder, ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def break_code(folder: Path, file: str, old: str, new: str) -> None:
    """Plant one deliberate bug, and make sure it landed."""
    path = folder / file
    source = path.read_text()
    assert old in source, f"{file} no longer holds {old!r}: update the planted bug"
    path.write_text(source.replace(old, new, 1))


@pytest.fixture
def workspaces(tmp_path: Path) -> Path:
    return tmp_path / "my"

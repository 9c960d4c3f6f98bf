"""`make start-weekN`: a workspace of the learner's own, never overwriting their work."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from learn.course import ROOT, STARTER
from learn.start import start


def test_week5_starts_from_the_starter_not_the_solution(workspaces: Path) -> None:
    message = start("week5", workspaces)
    folder = workspaces / "week5"
    assert "learn/starter/week5" in message
    for file in ("app/main.py", "app/routers/users.py", "app/schemas.py", "app/db.py"):
        assert (folder / file).read_text() == (STARTER / "week5" / file).read_text()
    assert "TODO (week 5, day 2)" in (folder / "app/routers/users.py").read_text()


def test_an_existing_workspace_is_never_overwritten(workspaces: Path) -> None:
    start("week5", workspaces)
    mine = workspaces / "week5" / "app" / "main.py"
    mine.write_text("# my own work\n")
    with pytest.raises(SystemExit, match="already exists"):
        start("week5", workspaces)
    assert mine.read_text() == "# my own work\n"


def test_the_next_week_starts_from_your_own_previous_week(workspaces: Path) -> None:
    start("week5", workspaces)
    mine = workspaces / "week5" / "app" / "routers" / "users.py"
    mine.write_text(mine.read_text() + "# my own work\n")
    message = start("week6", workspaces)
    assert "from " in message
    assert "week5" in message
    assert (workspaces / "week6" / "app/routers/users.py").read_text().endswith("# my own work\n")
    # Week 6's grader sets DB_LATENCY_MS: the settings arrive with the week.
    config = (workspaces / "week6" / "app" / "config.py").read_text()
    assert "db_latency_ms: int = 100" in config


def test_without_your_previous_week_it_starts_from_the_reference(workspaces: Path) -> None:
    start("week7", workspaces)
    folder = workspaces / "week7"
    reference = ROOT / "week6_async"
    app_files = sorted(p.relative_to(reference) for p in reference.rglob("app/**/*.py"))
    for file in app_files:  # every file of the app, routers/demo.py included
        if file.name == "config.py":
            continue  # it gains week 7's settings: below
        assert (folder / file).read_text() == (reference / file).read_text(), file
    assert not (folder / "README.md").exists()
    assert not (folder / "demo.py").exists()
    assert not (folder / "steps").exists()
    # And it imports: what the grader does first.
    check = [sys.executable, "-c", "import week7.app.main"]
    done = subprocess.run(check, cwd=workspaces, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Week 6's config gains what week 7's grader passes, once each, inside Settings.
    config = (folder / "app" / "config.py").read_text()
    for name in ("jwt_secret", "access_token_minutes", "argon2_time_cost", "argon2_memory_cost"):
        assert config.count(f"    {name}: ") == 1, config
    assert config.count("db_latency_ms: ") == 1
    compile(config, "config.py", "exec")


def test_the_final_project_starts_from_week_8(workspaces: Path) -> None:
    start("final", workspaces)
    config = (workspaces / "final" / "app" / "config.py").read_text()
    assert "admin_email: str | None = None" in config
    assert "redis_url: str" in config


def test_half_done_work_in_my_never_fails_the_linter(tmp_path: Path) -> None:
    # `make check` runs ruff over the whole repository: my/ must be outside it.
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    broken = tmp_path / "my" / "week5" / "app" / "main.py"
    broken.parent.mkdir(parents=True)
    broken.write_text("import os\ndef create_app(:\n")
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run([ruff, "check", "."], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # ... while the same file anywhere else is reported.
    shutil.copytree(tmp_path / "my", tmp_path / "elsewhere")
    done = subprocess.run([ruff, "check", "."], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout
    assert "elsewhere" in done.stdout

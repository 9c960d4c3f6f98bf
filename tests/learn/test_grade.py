"""`make grade-weekN`: the contract suite over a learner's app, reported by roadmap day."""

from pathlib import Path

import pytest

from learn.start import start
from tests.learn.conftest import break_code, copy_of_reference, grade

pytestmark = pytest.mark.slow


# Weeks 5, 7 and 8 are graded whole below, with one bug planted: every other day passing
# there is this proof for them. Each grade runs a week's contract suite once more.
@pytest.mark.parametrize("week", ["week6", "final"])
def test_the_reference_app_in_a_workspace_grades_full_marks(
    week: str, workspaces: Path, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if week in {"week8", "final"} else None
    result = grade(week, copy_of_reference(week, workspaces), redis_url)
    assert result.code == 0, result.output
    assert result.days, result.output
    assert not result.failing_days, result.output
    assert "Everything passes" in result.output


def test_the_untouched_starter_fails_every_day_without_crashing(workspaces: Path) -> None:
    start("week5", workspaces)
    result = grade("week5", workspaces / "week5")
    assert result.code == 1, result.output
    assert set(result.days) == {f"week5/day{n}" for n in (1, 2, 3, 4, 5)}, result.output
    assert result.failing_days == set(result.days), result.output
    assert "Traceback" not in result.output
    assert "Not implemented yet (week 5, day 1)" in result.output  # what the app did


@pytest.mark.parametrize(
    ("week", "file", "old", "new", "day"),
    [
        pytest.param(
            "week5",
            "app/routers/users.py",
            "HTTP_404_NOT_FOUND",
            "HTTP_400_BAD_REQUEST",
            "week5/day5",
            id="a 404 becomes a 400",
        ),
        pytest.param(
            "week5",
            "app/schemas.py",
            "Email = Annotated[EmailStr, AfterValidator(str.lower)]",
            "Email = EmailStr",
            "week5/day3",
            id="emails compared with their case",
        ),
        pytest.param(
            "week7",
            "app/security.py",
            'options={"require": REQUIRED_CLAIMS}',
            'options={"require": REQUIRED_CLAIMS, "verify_signature": False}',
            "week7/day2",
            id="a tampered token is accepted",
        ),
        pytest.param(
            "week8",
            "app/routers/users.py",
            "    await cache.invalidate()  # the cached lists lack the new user\n",
            "",
            "week8/day3",
            id="a sign-up leaves the cached lists as they were",
        ),
    ],
)
def test_one_planted_bug_fails_exactly_its_day_and_names_it(
    week: str,
    file: str,
    old: str,
    new: str,
    day: str,
    workspaces: Path,
    request: pytest.FixtureRequest,
) -> None:
    folder = copy_of_reference(week, workspaces)
    break_code(folder, file, old, new)
    redis_url = request.getfixturevalue("redis_url") if week == "week8" else None
    result = grade(week, folder, redis_url)
    assert result.code == 1, result.output
    assert result.failing_days == {day}, result.output
    assert f"  {day}: " in result.output  # the failing check is listed under its day


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        pytest.param(
            "app/routers/users.py", "\n\n\n@router.post", "\ndef broken(:\n\n@router.post",
            "SyntaxError", id="a syntax error",
        ),
        pytest.param(
            "app/main.py", "from .db import UserStore", "from .db import Store",
            "ImportError: cannot import name 'Store'", id="an import error",
        ),
        pytest.param(
            "app/main.py", "create_app", "make_app", "no create_app()", id="no create_app",
        ),
    ],
)  # fmt: skip
def test_code_that_cannot_be_graded_is_one_line_naming_the_file(
    workspaces: Path, file: str, old: str, new: str, expected: str
) -> None:
    start("week5", workspaces)
    broken = workspaces / "week5" / file
    source = broken.read_text()
    assert old in source, f"the starter's {file} no longer holds {old!r}"
    broken.write_text(source.replace(old, new))  # every occurrence: the app's name too
    result = grade("week5", workspaces / "week5")
    assert result.code == 1
    [line] = result.output.strip().splitlines()  # no traceback wall
    assert line.startswith(str(broken)), line
    assert expected in line, line


def test_grading_a_week_not_started_says_how_to_start(workspaces: Path) -> None:
    result = grade("week6", workspaces / "week6")
    assert result.code == 2
    assert "make start-week6" in result.output

"""`make grade-weekN`: run week N's contract tests over your app in my/weekN.

These are the same tests the reference apps pass (tests/contract), reported by roadmap
day: how many checks of each day pass, then the first few that fail, one line each.
It exits 0 only when every check passes.
"""

import contextlib
import importlib
import io
import os
import subprocess
import sys
import traceback
from collections import defaultdict
from pathlib import Path

import pytest

from .course import DAYS, ROOT, WEEKS, workspace

SHOWN_FAILURES = 5


class ByDay:
    """A pytest plugin that keeps each check's outcome under its roadmap day."""

    def __init__(self) -> None:
        self.day_of: dict[str, str] = {}
        self.passed: dict[str, int] = defaultdict(int)
        self.total: dict[str, int] = defaultdict(int)
        self.failures: list[tuple[str, str, str]] = []  # (day, check, what the app did)
        self.skipped: list[str] = []

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("day")
            self.day_of[item.nodeid] = str(marker.args[0]) if marker else "other"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        day = self.day_of.get(report.nodeid, "other")
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.total[day] += 1
            if report.passed:
                self.passed[day] += 1
            elif report.skipped:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
                self.skipped.append(str(reason).removeprefix("Skipped: "))
            else:
                self.failures.append((day, check_name(report.nodeid), what_happened(report)))

    def summary(self) -> str:
        lines = []
        for day in sorted(self.total, key=day_order):
            label = f"{day}  {DAYS.get(day, 'checks without a day')} ".ljust(50, ".")
            passed, total = self.passed[day], self.total[day]
            mark = "done" if passed == total else ""
            lines.append(f"  {label} {passed:3} of {total:3}  {mark}".rstrip())
        if self.failures:
            lines += [
                "",
                "First failing checks (day: what the check expects -> what your app did):",
            ]
            shown = set()
            for day, check, happened in self.failures:
                name = check.split("[")[0]
                if name in shown:
                    continue
                shown.add(name)
                lines.append(f"  {day}: {check} -> {happened}")
                if len(shown) == SHOWN_FAILURES:
                    break
        if self.skipped:
            lines += ["", f"Skipped {len(self.skipped)}: {sorted(set(self.skipped))[0]}"]
        passed, total = sum(self.passed.values()), sum(self.total.values())
        lines += ["", f"{passed} of {total} checks pass."]
        return "\n".join(lines)


def day_order(day: str) -> tuple[int, int]:
    week, _, number = day.partition("/day")
    return (int(week.removeprefix("week")), int(number)) if number else (99, 0)


def check_name(nodeid: str) -> str:
    """`tests/contract/test_users.py::test_read_user_is_it[yours]` -> `read user is it`."""
    name = nodeid.rsplit("::", 1)[-1]
    name, _, params = name.partition("[")
    params = params.rstrip("]").removeprefix("yours").lstrip("-")
    readable = name.removeprefix("test_").replace("_", " ")
    return f"{readable} [{params}]" if params else readable


def what_happened(report: pytest.TestReport) -> str:
    """The assertion's own message, on one line: usually the status and body the app sent."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    parts = [
        line.strip().removeprefix("AssertionError: ")
        for line in message.splitlines()
        if line.strip() and not line.strip().startswith(("+", "where"))
    ]
    text = " | ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


def first_problem(folder: Path) -> str | None:
    """A syntax error, an import error or a missing create_app, as one line naming the file."""
    for path in sorted(folder.rglob("*.py")):
        try:
            compile(path.read_bytes(), str(path), "exec")
        except SyntaxError as exc:
            return f"{shown(path)}:{exc.lineno}: SyntaxError: {exc.msg}"
    # Imported in a process of its own: whatever the app imports, pytest must import first.
    check = [sys.executable, "-m", "learn.grade", "--import-only", str(folder)]
    found = subprocess.run(check, capture_output=True, text=True, cwd=ROOT, check=False)  # noqa: S603
    return found.stdout.strip() or None


def import_problem(folder: Path) -> str | None:
    sys.path.insert(0, str(folder.parent))
    try:
        main = importlib.import_module(f"{folder.name}.app.main")
    except BaseException as exc:  # a learner's module may raise anything, even SystemExit
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if Path(frame.filename).resolve().is_relative_to(folder)
        ]
        where = (
            f"{shown(Path(frames[-1].filename))}:{frames[-1].lineno}" if frames else shown(folder)
        )
        return f"{where}: {type(exc).__name__}: {exc}"
    if not callable(getattr(main, "create_app", None)):
        main_py = shown(folder / "app" / "main.py")
        return f"{main_py}: no create_app() function; the grader builds your app with it"
    return None


def shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def grade(week: str, folder: Path) -> int:
    folder = folder.resolve()
    if not (folder / "app" / "main.py").exists():
        print(f"No app in {shown(folder)} yet: run `make start-{week}` first.")
        return 2
    if problem := first_problem(folder):
        print(problem)
        return 1
    print(f"Grading {shown(folder)} with the tests of the reference {week}...")
    report = ByDay()
    args = ["tests/contract", "--app", week, "--workspace", str(folder), "-p", "no:cacheprovider"]
    # pytest's own output is the long form; the summary below is the short one.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        os.chdir(ROOT)
        code = pytest.main([*args, "-q", "--tb=line"], plugins=[report])
    print(report.summary())
    if code == pytest.ExitCode.OK and not report.skipped:
        print(f"Everything passes: {week} is done.")
        return 0
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"The tests could not run (pytest exit code {int(code)}).")
    return 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["--import-only"]:
        print(import_problem(Path(argv[1]).resolve()) or "")
        return 0
    if not argv or argv[0] not in WEEKS or len(argv) > 2:
        print(f"usage: python -m learn.grade {{{','.join(WEEKS)}}} [folder]", file=sys.stderr)
        return 2
    week = argv[0]
    return grade(week, Path(argv[1]) if len(argv) == 2 else workspace(week))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

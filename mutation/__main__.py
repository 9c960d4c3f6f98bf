"""`make mutate`: run mutmut over each group of modules with that group's own tests.

    python -m mutation                      # every group, at most 30 minutes, then the table
    python -m mutation shared-cache week8   # only these groups
    python -m mutation --minutes 90         # a longer budget
    python -m mutation --retest-survivors   # also re-run the mutants that survived last time
    python -m mutation --report             # only the table and the survivors of the last runs
    python -m mutation show NAME            # the diff of one mutant

Each group works in .cache/mutation/<group>/, where mutmut keeps its copy of the code
(mutants/) and every verdict: a later run tests only the mutants that have none, those
of new or changed functions and those a run out of time did not reach. README.md
explains the choices.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"

# The packages a group's tests import. mutmut copies them whole into mutants/, so an
# unmutated module of the same package is imported from the copy too: a package split
# between the copy and the working tree would not import.
PACKAGES = ("shared", "final_project", "week8_redis")
# What the tests read besides the packages: the tests themselves and pytest's settings
# (asyncio mode, markers, warnings as errors, the per-test timeout).
LINKED = (*PACKAGES, "tests", "pyproject.toml")

# mutmut runs each mutant's tests with -x, fastest first, so the first failure ends it.
# Tests marked slow start uvicorn workers, which import the working tree's code: mutmut
# switches mutants on only inside its own processes, so those could not kill one. Plugins no
# group's tests use cost ~0.15 s of pytest start-up per mutant, thousands of times.
PYTEST_ARGS = (
    *("-m", "not slow", "-p", "no:cacheprovider"),
    *("-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"),
)


@dataclass(frozen=True)
class Group:
    name: str
    mutate: tuple[str, ...]  # globs, relative to the repository
    tests: tuple[str, ...]
    # Tests left out when the run is niced (`nice make mutate`), which they cannot pass.
    fail_when_niced: tuple[str, ...] = ()


# A module is tested by the tests written for it, not by whatever else happens to run
# it: a mutant killed only by another module's tests marks a gap in its own. The test
# paths are globs, so a new test file (tests/shared/test_cache_gaps.py) joins its group.
GROUPS = (
    Group(
        "shared-auth",
        ("shared/auth/*",),
        (
            "tests/shared/test_auth_*.py",
            "tests/shared/test_composition.py",
            # load_or_create_secret (settings.py): the secret file workers share.
            "tests/shared/test_security.py",
        ),
    ),
    # test_composition.py is where auth, cache and rate limit meet: the rate limiter's
    # round trip peeks the keys the others read next, and only those tests check it.
    Group(
        "shared-cache",
        ("shared/cache/*",),
        ("tests/shared/test_cache*.py", "tests/shared/test_composition.py"),
    ),
    Group(
        "shared-rate-limit",
        ("shared/rate_limit/*",),
        ("tests/shared/test_rate_limit*.py", "tests/shared/test_composition.py"),
    ),
    Group("shared-redis", ("shared/redis/*",), ("tests/shared/test_redis*.py",)),
    Group(
        "shared-web",
        ("shared/__init__.py", "shared/identity.py", "shared/security.py"),
        ("tests/shared/test_security.py", "tests/shared/test_composition.py"),
    ),
    Group(
        "shared-observability",
        ("shared/observability.py",),
        ("tests/shared/test_observability.py", "tests/shared/test_composition.py"),
    ),
    # Nothing in tests/shared imports these two: the final project's tests are theirs.
    Group(
        "shared-metrics-docs",
        ("shared/metrics.py", "shared/docs.py"),
        ("tests/final_project/test_metrics.py", "tests/final_project/test_hardening.py"),
    ),
    Group(
        "final-project",
        ("final_project/app/deps.py", "final_project/app/routers/*"),
        (
            "tests/final_project/test_authorization.py",
            "tests/final_project/test_sessions.py",
            "tests/final_project/test_tokens.py",
            "tests/final_project/test_cache_and_limits.py",
            "tests/final_project/test_abuse_budgets.py",
            # The status and body of every error a route answers (404, 409, 422, 429).
            "tests/final_project/test_hardening.py",
            "tests/final_project/test_*gaps*.py",
        ),
    ),
    Group(
        "week8",
        ("week8_redis/app/cache.py", "week8_redis/app/rate_limit.py"),
        (
            "tests/week8_redis/test_cache.py",
            "tests/week8_redis/test_rate_limit.py",
            "tests/week8_redis/test_outages.py",
            "tests/week8_redis/test_*gaps*.py",
        ),
    ),
)

# mutmut's statuses, as the table counts them. A timeout is a kill: the mutant made a
# test hang or loop, and a hang is noticed (pytest-timeout turns it into a failure).
DETECTED = {"killed", "timeout", "caught by type check"}
# "not checked": a run out of time has not reached it yet. (A line marked with the
# tool's pragma, README.md, has no mutants at all.)
NOT_RUN = {"skipped", "not checked"}


def pytest_args(group: Group) -> tuple[str, ...]:
    if os.getpriority(os.PRIO_PROCESS, 0) <= 0:
        return PYTEST_ARGS
    return (*PYTEST_ARGS, *(arg for test in group.fail_when_niced for arg in ("--deselect", test)))


def test_files(group: Group) -> list[str]:
    found = {path.relative_to(ROOT).as_posix() for glob in group.tests for path in ROOT.glob(glob)}
    return sorted(found)


def setup_cfg(group: Group) -> str:
    def lines(values: Sequence[str]) -> str:
        return "".join(f"\n    {value}" for value in values)

    return (
        "# Written by `python -m mutation` on every run; edit GROUPS there instead.\n"
        "[mutmut]\n"
        f"source_paths ={lines(PACKAGES)}\n"
        f"only_mutate ={lines(group.mutate)}\n"
        f"pytest_add_cli_args ={lines(pytest_args(group))}\n"
        f"pytest_add_cli_args_test_selection ={lines(test_files(group))}\n"
    )


def prepare(group: Group) -> Path:
    """The group's working folder: links to the code and tests, and its mutmut config."""
    folder = WORK / group.name
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    config = folder / "setup.cfg"
    text = setup_cfg(group)
    # An unchanged file keeps mutmut's cache: it re-tests everything when its config changes.
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return folder


@contextmanager
def shared_redis() -> Iterator[None]:
    """One redis-server for the whole run, instead of one per mutant's pytest session.

    The tests keep their keys under a prefix of their own (tests/conftest.py), so
    the mutants tested in parallel do not see each other's data.
    """
    if os.environ.get("TEST_REDIS_URL"):
        yield
        return
    from tests.servers import private_redis

    with private_redis() as server:
        os.environ["TEST_REDIS_URL"] = server.url
        try:
            yield
        finally:
            del os.environ["TEST_REDIS_URL"]


def verdicts(group: Group) -> dict[str, dict[str, str]]:
    """mutmut's last verdict on each mutant of the group's modules, by module."""
    by_module: dict[str, dict[str, str]] = {}
    mutants = WORK / group.name / "mutants"
    for meta in sorted(mutants.rglob("*.py.meta")):
        source = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        if any(fnmatch.fnmatch(source, pattern) for pattern in group.mutate):
            exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
            if exit_codes:
                by_module[source] = {
                    name: status_by_exit_code[code] for name, code in exit_codes.items()
                }
    return by_module


def survivors(group: Group) -> list[str]:
    """The mutants no test failed on, those no test ran included: mutmut keeps either
    verdict until the mutant is re-tested by name, even after new tests."""
    return [
        name
        for statuses in verdicts(group).values()
        for name, status in statuses.items()
        if status in {"survived", "no tests"}
    ]


def row(module: str, counts: Counter[str]) -> tuple[str, ...]:
    run = sum(n for status, n in counts.items() if status not in NOT_RUN)
    detected = sum(counts[status] for status in DETECTED)
    # Only the mutants that ran count: one a run out of time did not reach is no
    # evidence either way. A mutant whose function no test runs counts as survived.
    rate = f"{100.0 * detected / run:.1f}" if run else "-"
    return (
        module,
        str(sum(counts.values())),
        str(counts["killed"]),
        str(counts["survived"] + counts["no tests"]),
        str(counts["timeout"]),
        str(run - detected - counts["survived"] - counts["no tests"]),
        str(counts["not checked"]),
        rate,
    )


def table(groups: Sequence[Group]) -> str:
    header = ("module", "mutants", "killed", "survived", "timeout", "other", "not run", "kill %")
    rows: list[tuple[str, ...]] = []
    total: Counter[str] = Counter()
    for group in groups:
        for module, statuses in verdicts(group).items():
            counts = Counter(statuses.values())
            total += counts
            rows.append(row(module, counts))
    widths = [max(len(r[i]) for r in (header, *rows, row("total", total))) for i in range(8)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *map(line, rows), rule, line(row("total", total))])


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop mutmut as Ctrl-C does: it keeps every verdict so far, and the mutants it was
    testing get none, so the next run tests them again."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(group: Group, *, seconds: float, max_children: int, retest_survivors: bool) -> str:
    """Run mutmut over one group for at most `seconds`: "done", "out of time" or "failed"."""
    folder = prepare(group)
    names = survivors(group) if retest_survivors else []
    print(
        f"\n== {group.name}: {', '.join(group.mutate)} (at most {seconds / 60:.0f} min)", flush=True
    )
    started = time.monotonic()
    # Named mutants are re-tested even though they have a verdict; without names,
    # mutmut tests only the mutants that have none yet.
    command = [str(MUTMUT), "run", "--max-children", str(max_children), *names]
    process = subprocess.Popen(command, cwd=folder)  # noqa: S603 (our own command line)
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        stop(process)
        print(f"== {group.name}: out of time; the next run goes on from here")
        return "out of time"
    except KeyboardInterrupt:
        stop(process)
        raise
    print(f"== {group.name}: {time.monotonic() - started:.0f} s, mutmut exit code {code}")
    return "done" if code == 0 else "failed"


def show(name: str) -> int:
    """Print one mutant's diff, from whichever group's folder knows it."""
    for group in GROUPS:
        folder = WORK / group.name
        module = name.partition(".x")[0].replace(".", "/")
        if any((folder / "mutants").glob(f"{module}*.meta")):
            command = [str(MUTMUT), "show", name]
            return subprocess.run(command, cwd=folder, check=False).returncode  # noqa: S603
    print(f"No group has tested {name}; the table's survivors are listed by `--report`.")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    names = [group.name for group in GROUPS]
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"one of {', '.join(names)}")
    parser.add_argument("--minutes", type=float, default=30.0, help="time budget of the run")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--retest-survivors", action="store_true")
    parser.add_argument("--report", action="store_true", help="print the last results only")
    args = parser.parse_args(argv)

    if args.groups[:1] == ["show"]:
        if len(args.groups) != 2:
            parser.error("usage: python -m mutation show MUTANT_NAME")
        return show(args.groups[1])
    unknown = set(args.groups) - set(names)
    if unknown:
        parser.error(f"unknown group {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    chosen = [group for group in GROUPS if not args.groups or group.name in args.groups]

    failed = []
    if not args.report:
        if not MUTMUT.exists():
            print("mutmut is missing: make mutate installs it (the `mutation` extra).")
            return 2
        # A shell starts background jobs with Ctrl-C ignored, and mutmut would inherit
        # that: the budget below stops it with Ctrl-C.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        started = time.monotonic()
        deadline = started + args.minutes * 60
        with ExitStack() as stack:
            if shutil.which("redis-server"):
                stack.enter_context(shared_redis())
            pending, retest = chosen, args.retest_survivors
            # Rounds: a group out of time goes on in the next one, while a minute is left.
            while pending and deadline - time.monotonic() > 60:
                unfinished = []
                for n, group in enumerate(pending):
                    # An even share of what is left: a group done early leaves more for the
                    # rest. A minute at least, as mutmut needs some to start.
                    left = deadline - time.monotonic()
                    if left < 60:
                        unfinished += pending[n:]
                        break
                    outcome = run(
                        group,
                        seconds=max(left / (len(pending) - n), 60),
                        max_children=args.max_children,
                        retest_survivors=retest,
                    )
                    if outcome == "failed":
                        failed.append(group.name)
                    elif outcome == "out of time":
                        unfinished.append(group)
                pending, retest = unfinished, False
        print(f"\nmutation run: {(time.monotonic() - started) / 60:.1f} min")

    print()
    print(table(chosen))
    if args.report:
        for group in chosen:
            for name in survivors(group):
                print("survived:", name)
    else:
        print("\nThe surviving mutants: python -m mutation --report; one's diff: ... show NAME")
    if failed:
        print(f"\nmutmut failed for: {', '.join(failed)} (its output is above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

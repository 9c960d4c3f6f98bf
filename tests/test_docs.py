"""Every Markdown file's links and code references point at something that exists.

Three rules, checked on every `.md` file of the repository (outside `my/`, `bench/out/`
and hidden folders such as `.venv`):

- A relative link, `[text](path#anchor)`, names a file or folder inside the repository.
  Links with a scheme (`https:`, `mailto:`) are not followed; an absolute path, or one
  that climbs out of the repository, is an error.
- A backticked `path/file.py:name` or `file.py:Class.method` names a function, class,
  method or assignment of that file. The path is tried from the Markdown file's folder,
  then from its top-level folder (`week5_crud/`), then from the repository root.
- A backticked `tests/.../test_x.py::test_name` names a function of that test file. A
  bare `::test_name` means the test file named last before it on the same line (if that
  one was a `tests/...` path; nothing is checked otherwise).

The Python files are parsed with `ast`, never imported.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_FOLDERS = {Path("my"), Path("bench/out")}

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s()<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
NAME = r"[A-Za-z_]\w*"
CODE_REFERENCE = re.compile(rf"(?P<path>[\w./-]+\.py):(?P<name>{NAME}(?:\.{NAME})*)")
TEST_REFERENCE = re.compile(rf"(?P<path>[\w./-]+\.py)?(?P<names>(?:::{NAME})+)(?:\[.*\])?")


def markdown_files() -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT)
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and here / name not in SKIPPED_FOLDERS
        )
        found += [here / name for name in sorted(files) if name.endswith(".md")]
    return found


def without_fenced_code(text: str) -> str:
    # Keep the line count, so that "same line" still means the same line.
    return FENCE.sub(lambda block: "\n" * block.group().count("\n"), text)


@functools.cache
def definitions(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def defines(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The statement of `body` that defines `name`: a def, a class or an assignment."""
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if statement.name == name:
                return statement
        elif isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(target, ast.Name) and target.id == name for target in targets):
                return statement
        elif isinstance(statement, ast.If | ast.Try):
            nested = [*statement.body, *statement.orelse]
            if isinstance(statement, ast.Try):
                nested += [s for handler in statement.handlers for s in handler.body]
            if found := defines(nested, name):
                return found
    return None


def has_name(path: Path, dotted: list[str]) -> bool:
    """`dotted` is a chain like ["UserStore", "create"]: a class, then its member."""
    body: list[ast.stmt] = definitions(path).body
    for i, name in enumerate(dotted):
        found = defines(body, name)
        if found is None:
            return False
        if i < len(dotted) - 1:
            if not isinstance(found, ast.ClassDef):
                return False
            body = found.body
    return True


def inside_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def link_errors(markdown: Path, text: str) -> list[str]:
    errors = []
    spans_as_text = CODE_SPAN.sub(lambda span: "code", text)
    targets = LINK.findall(spans_as_text) + REFERENCE_LINK.findall(spans_as_text)
    for target in targets:
        path = target.split("#", 1)[0]
        if SCHEME.match(target) or not path:
            continue
        if path.startswith("/"):
            errors.append(f"link {target} is an absolute path; link relative to the file")
            continue
        resolved = ROOT / markdown.parent / path
        if not inside_repository(resolved):
            errors.append(f"link {target} leaves the repository")
        elif not resolved.exists():
            errors.append(f"link {target} points to nothing")
    return errors


def find_python_file(markdown: Path, path: str) -> Path | None:
    top = markdown.parts[0] if len(markdown.parts) > 1 else ""
    for base in (markdown.parent, Path(top), Path()):
        candidate = ROOT / base / path
        if candidate.is_file() and inside_repository(candidate):
            return candidate
    return None


def reference_errors(markdown: Path, text: str) -> list[str]:
    errors = []
    for line in text.splitlines():
        last_test_file: str | None = None
        for _, span in CODE_SPAN.findall(line):
            span = span.strip()
            if test := TEST_REFERENCE.fullmatch(span):
                if test["path"]:
                    # Only paths from the root are checked: `test_x.py::...` could be anywhere.
                    last_test_file = test["path"] if test["path"].startswith("tests/") else None
                path = last_test_file
                if path is None:
                    continue
                names = test["names"].removeprefix("::").split("::")
                reference = f"{path}::{'::'.join(names)}"
                if not (ROOT / path).is_file():
                    errors.append(f"{reference}: {path} does not exist")
                elif not has_name(ROOT / path, names):
                    errors.append(f"{reference} does not exist")
            elif code := CODE_REFERENCE.fullmatch(span):
                file = find_python_file(markdown, code["path"])
                if file is None:
                    errors.append(f"{span}: {code['path']} does not exist")
                elif not has_name(file, code["name"].split(".")):
                    errors.append(f"{span} does not exist")
    return errors


@pytest.mark.parametrize("markdown", markdown_files(), ids=str)
def test_links_and_code_references_point_at_something_that_exists(markdown: Path) -> None:
    text = without_fenced_code((ROOT / markdown).read_text(encoding="utf-8"))
    errors = link_errors(markdown, text) + reference_errors(markdown, text)
    assert not errors, "\n".join(f"{markdown}: {error}" for error in errors)


def test_the_checker_catches_what_it_is_for() -> None:
    """The rules themselves, on a made-up README in week 5."""
    markdown = Path("week5_crud/README.md")
    text = without_fenced_code(
        "[ok](app/db.py) [gone](app/nope.py#x) [out](../../etc/passwd) [web](https://a.b)\n"
        "`app/db.py:UserStore.nope` `db.py:UserStore` `app/main.py:create_app`\n"
        "```\n`app/db.py:ignored_in_a_fence`\n```\n"
        "`tests/week5_crud/test_store.py::test_each_app_has_its_own_users`, `::test_nope`\n"
    )
    assert link_errors(markdown, text) == [
        "link app/nope.py#x points to nothing",
        "link ../../etc/passwd leaves the repository",
    ]
    assert reference_errors(markdown, text) == [
        "app/db.py:UserStore.nope does not exist",
        "db.py:UserStore: db.py does not exist",
        "tests/week5_crud/test_store.py::test_nope does not exist",
    ]

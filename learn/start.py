"""`make start-weekN`: create my/weekN, the folder where you build week N yourself.

Week 5 starts from a starter with a TODO for each roadmap day. Every later week starts
from your own previous week (or, if you skipped it, from the reference app), plus the
settings that week's grader passes to your app. Existing work is never overwritten.
"""

import ast
import shutil
import sys
from pathlib import Path

from .course import ROOT, STARTER, WEEKS, WORKSPACES, Setting, Week, workspace

# What a reference week has beside its app: not part of the app you build. Only at
# the top of the week's folder: week 6 on has an `app/routers/demo.py` of its own.
BESIDE_THE_APP = {"steps", "demo.py", "README.md"}


def not_copied(folder: str, names: list[str]) -> set[str]:
    """For `shutil.copytree`: caches anywhere, and what sits beside the app at the top."""
    skipped = {name for name in names if name == "__pycache__"}
    if Path(folder).name != "app" and (Path(folder) / "app").is_dir():
        skipped |= BESIDE_THE_APP & set(names)
    return skipped


CONFIG_HEADER = '''"""Settings from environment variables (and an optional `.env` file)."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
'''


def start(name: str, workspaces: Path = WORKSPACES) -> str:
    """Create the workspace for week `name` and say where it came from."""
    week = WEEKS[name]
    target = workspace(name, workspaces)
    if target.exists():
        raise SystemExit(
            f"{relative(target)} already exists, and your work there is never overwritten.\n"
            f"To start again, rename or delete it first. To grade it: make grade-{name}"
        )
    source = source_of(week, workspaces)
    target.parent.mkdir(exist_ok=True)
    shutil.copytree(source, target, ignore=not_copied)
    (target / "__init__.py").touch()
    added = add_settings(target / "app" / "config.py", week.settings)
    message = f"Created {relative(target)} from {relative(source)}."
    if added:
        message += f"\nAdded to {relative(target / 'app' / 'config.py')}: {', '.join(added)}."
    return (
        f"{message}\nNext: follow the roadmap's days for {name} (its README's 'Build it "
        f"yourself'), then run `make grade-{name}`."
    )


def source_of(week: Week, workspaces: Path) -> Path:
    if week.previous is None:
        return STARTER / week.name
    yours = workspace(week.previous, workspaces)
    if (yours / "app" / "main.py").exists():
        return yours
    return ROOT / WEEKS[week.previous].reference


def add_settings(config: Path, settings: tuple[Setting, ...]) -> list[str]:
    """Add the settings your app doesn't have yet to its `Settings` class."""
    if not settings:
        return []
    if not config.exists():
        config.write_text(CONFIG_HEADER)
    source = config.read_text()
    tree = ast.parse(source)
    cls = next(
        (node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings"),
        None,
    )
    if cls is None:
        source += "\n\n" + CONFIG_HEADER.split("\n\n\n", 1)[1]
        tree = ast.parse(source)
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    have = {
        node.target.id
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    missing = [setting for setting in settings if setting.name not in have]
    if not missing:
        return []
    lines = source.splitlines(keepends=True)
    new = [
        f"    # TODO ({setting.why})\n"
        f"    {setting.name}: {setting.annotation} = {setting.default}\n"
        for setting in missing
    ]
    end = cls.end_lineno or len(lines)
    lines[end:end] = ["\n", *new]
    config.write_text("".join(lines))
    return [setting.name.upper() for setting in missing]


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in WEEKS:
        print(f"usage: python -m learn.start {{{','.join(WEEKS)}}}", file=sys.stderr)
        return 2
    print(start(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

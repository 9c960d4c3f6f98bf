""".env.example lists every setting of the live `Settings` class, at its default,
each with a comment: a setting added to config.py fails this until it is listed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from final_project.app.config import Settings
from tests.servers import ROOT

EXAMPLE = ROOT / ".env.example"
# Read by the server command and compose.yaml, not by Settings.
NOT_SETTINGS = {"WORKERS", "PORT", "HOST", "FORWARDED_ALLOW_IPS", "POSTGRES_PASSWORD"}
ENTRY = re.compile(r"^(?P<unset># )?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def entries() -> list[tuple[str, str, bool, str]]:
    """(NAME, value, set?, the line above) for each `NAME=value` or `# NAME=` line."""
    lines = EXAMPLE.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        if match := ENTRY.match(line):
            above = lines[number - 1] if number else ""
            found.append((match["name"], match["value"], not match["unset"], above))
    return found


def test_every_setting_is_listed_once_with_a_comment() -> None:
    names = [name for name, *_ in entries()]
    settings = {name.upper() for name in Settings.model_fields}

    assert len(names) == len(set(names))
    assert set(names) - NOT_SETTINGS == settings
    for name, _value, _is_set, above in entries():
        assert above.startswith("# "), f"{name} has no comment"
        assert not ENTRY.match(above), f"{name} has no comment"


def test_the_listed_values_are_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for setting in Settings.model_fields:
        monkeypatch.delenv(setting.upper(), raising=False)
    listed = tmp_path / ".env"
    listed.write_text(
        "\n".join(f"{name}={value}" for name, value, is_set, _ in entries() if is_set)
    )

    from_example = Settings(_env_file=listed)
    defaults = Settings(_env_file=None)

    assert from_example.model_dump() == defaults.model_dump()
    unset = {name.lower() for name, _, is_set, _ in entries() if not is_set} - {
        name.lower() for name in NOT_SETTINGS
    }
    assert unset, "the unset ones are the settings without a fixed default"
    for name in unset:
        field = Settings.model_fields[name]
        # None, or worked out at start-up (e.g. from the CPU count): nothing to write down.
        assert field.default is None or field.default_factory is not None, name

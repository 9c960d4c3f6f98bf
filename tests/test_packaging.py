"""The project keeps installing: its metadata builds without a single warning.

setuptools warns long before it stops accepting something (the `license = { text =
... }` table stops building after 2027-02-18), and pip shows a build's warnings only
with `-v`. Building the metadata here with warnings as errors turns each such notice
into a failing test the day it appears.
"""

from __future__ import annotations

import subprocess
import sys
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What pip asks of the build backend before it builds a wheel, in a process of its own
# so that warnings become errors there only.
PREPARE_METADATA = """
import sys
import warnings

warnings.simplefilter("error")
from setuptools import build_meta

print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))
"""


def test_the_metadata_builds_without_warnings_and_declares_the_mit_license(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PREPARE_METADATA, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    dist_info = tmp_path / run.stdout.splitlines()[-1]
    metadata = Parser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
    assert metadata["License-Expression"] == "MIT", metadata.as_string()[:500]
    assert metadata.get_all("License-File") == ["LICENSE"]
    shipped = (dist_info / "licenses" / "LICENSE").read_text(encoding="utf-8")
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert shipped.startswith("MIT License")

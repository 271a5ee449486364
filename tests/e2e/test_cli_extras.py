"""The commands that need the 'sandbox' extra, run from an install without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def without_starlette(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import starlette`` fails, as in a wheel installed without extras."""
    shim = tmp_path / "shim" / "starlette"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'starlette'\", name='starlette')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), str(ROOT)])}


def test_cli_demo_without_the_sandbox_extra_exits_2_naming_the_install_command(
    without_starlette: dict[str, str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "demo", "--folder", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        env=without_starlette,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "ugcwatchd: the demo needs the 'sandbox' extra, which is not installed (pip install 'ugcwatchd[sandbox]')\n"
    )
    assert result.stdout == "" and not (tmp_path / "demo").exists()

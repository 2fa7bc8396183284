"""Run the real ``hetc`` console script in a subprocess, importing the hetc under test (this checkout's code)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def console_script() -> str:
    """The installed ``hetc`` entry point (pip install -e .), as a user runs it."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "hetc", shutil.which("hetc")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("the hetc console script is not installed (pip install -e .)", allow_module_level=True)


def hetc_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: the script imports the hetc of this checkout, not another install."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_hetc(*args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([console_script(), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=hetc_env(), timeout=timeout)

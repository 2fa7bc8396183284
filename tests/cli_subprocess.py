"""Run the real ``hetc`` console script in a subprocess, with this worktree's hetc first on the path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_hetc(*args: str | Path, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    script = shutil.which("hetc")
    cmd = [script] if script else [sys.executable, "-c", "import sys; from hetc.cli import main; main()"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)

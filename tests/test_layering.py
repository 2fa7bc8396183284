"""Stages import only earlier stages (DESIGN.md's package map): the pipeline stays a straight line."""
from __future__ import annotations

import ast
from pathlib import Path

STAGES = ["ir", "frontend", "passes", "target", "schedule", "memory", "codegen", "sim", "validate", "report", "sweep"]
PACKAGE = Path(__file__).resolve().parent.parent / "hetc"


def _imported_stages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == "hetc" and parts[1] in STAGES:
                found.add(parts[1])
    return found


def test_every_stage_imports_only_earlier_stages() -> None:
    violations = []
    for rank, stage in enumerate(STAGES):
        for path in sorted((PACKAGE / stage).rglob("*.py")):
            later = {s for s in _imported_stages(path) if STAGES.index(s) > rank}
            violations += [f"{path.relative_to(PACKAGE.parent)} imports hetc.{s}" for s in sorted(later)]
    assert violations == []


def test_the_checker_sees_imports() -> None:
    assert {"ir", "target"} <= _imported_stages(PACKAGE / "target" / "capability.py")


def test_no_stage_imports_the_top_level_package() -> None:
    """``import hetc`` inside a stage would pull in the API (and through it every later stage)."""
    offenders = []
    for stage in STAGES:
        for path in sorted((PACKAGE / stage).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import) and any(a.name == "hetc" for a in node.names):
                    offenders.append(str(path.relative_to(PACKAGE.parent)))
                elif isinstance(node, ast.ImportFrom) and node.module == "hetc":
                    offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert offenders == []

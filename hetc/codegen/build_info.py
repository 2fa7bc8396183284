"""``build-info.json``: the wall-clock figures of a build, kept out of the bundle's hashed files.

Every other file of a bundle is a function of the model, the target and the options; compile, stage and solver
times are not, so ``Bundle.files()`` leaves them out and ``Bundle.save`` writes them here, outside the manifest
and its checksums. ``load_bundle`` puts them back when the file is there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
BUILD_INFO = "build-info.json"
# Figures that vary run to run, by the bundle file (in its in-memory form) and key path where each sits. They are
# written to the unhashed BUILD_INFO instead, so that every hashed file is a function of the model, the target
# and the options; loading puts them back when BUILD_INFO is there.
WALL_CLOCK_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (MANIFEST, ("summary", "compile_s")),
    (MANIFEST, ("summary", "stage_s")),
    (MANIFEST, ("summary", "solver", "wall_s")),
    ("schedule.json", ("solver", "wall_s")),
    ("schedule.json", ("solver", "details", "solver_wall_s")),
    ("memory.json", ("details", "seconds")),
)


def split_wall_clock(name: str, doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``doc`` (the in-memory form of bundle file ``name``) without its wall-clock figures, and those figures
    nested as they were in ``doc``. ``doc`` itself is not modified."""
    removed: dict[str, Any] = {}
    for file, path in WALL_CLOCK_FIELDS:
        if file == name:
            doc = _without(doc, path, removed)
    return doc, removed


def without_wall_clock(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    return split_wall_clock(name, doc)[0]


def _without(doc: Any, path: tuple[str, ...], removed: dict[str, Any]) -> Any:
    head, rest = path[0], path[1:]
    if not isinstance(doc, dict) or head not in doc:
        return doc
    out = dict(doc)
    if not rest:
        removed[head] = out.pop(head)
        return out
    inner = removed.setdefault(head, {})
    out[head] = _without(doc[head], rest, inner)
    if not inner:
        del removed[head]
    return out


def with_wall_clock(doc: dict[str, Any], name: str, info: Any) -> dict[str, Any]:
    """``doc`` with the wall-clock figures of ``info`` (a parsed BUILD_INFO) put back. Only the paths of
    WALL_CLOCK_FIELDS and only numbers are taken: the file is not hashed, so it must not be able to change
    anything else."""
    for file, path in WALL_CLOCK_FIELDS:
        if file != name:
            continue
        value = info.get(name) if isinstance(info, dict) else None
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if not _is_figure(value):
            continue
        doc = _with_value(doc, path, value)
    return doc


def _with_value(doc: Any, path: tuple[str, ...], value: Any) -> Any:
    if not isinstance(doc, dict) or (len(path) > 1 and not isinstance(doc.get(path[0]), dict)):
        return doc
    return {**doc, path[0]: value if len(path) == 1 else _with_value(doc[path[0]], path[1:], value)}


def _is_figure(value: Any) -> bool:
    """A number, or a flat {name: number} (the stage times)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_number(v) for k, v in value.items())
    return _is_number(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_build_info(root: Path) -> Any:
    """The parsed ``build-info.json``, or None when it is absent or unreadable: it only holds wall-clock
    figures, which nothing the simulator does depends on."""
    try:
        return json.loads((root / BUILD_INFO).read_bytes())
    except (OSError, ValueError):
        return None

"""Running a sweep's points: on Ray (local by default, ``address`` for a cluster) or serially in-process.

Each finished point's row is appended to ``DIR/points.jsonl`` at once, so an interrupted sweep keeps every
point it finished and ``resume`` skips them (matched by the content hash of model, target and options;
``hetc.sweep.spec.point_key``). How points run on Ray (one CPU and one thread each, the local Ray's start
hidden behind points run in the driver) is ``hetc.sweep.onray``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from hetc.errors import OptionError, WriteError
from hetc.sweep.derive import base_text
from hetc.sweep.onray import run_on_ray
from hetc.sweep.point import FAILED, model_bytes_of, run_point
from hetc.sweep.spec import TARGET_FILE_AXIS, Point, SweepSpec, point_key

ROWS_FILE = "points.jsonl"
INSTALL_HINT = "install it with: pip install 'hetc[sweep]'"
Progress = Callable[[dict[str, Any]], None]


def require_ray() -> Any:
    """``ray``, or an OptionError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionError(f"hetc sweep runs its points on Ray, which is not installed; {INSTALL_HINT} "
                          f"(or pass --serial to run the points one after another in this process)") from None
    return ray


@dataclass
class Inputs:
    """What every point reads: model bytes by name, the base target's TOML, alternative target files."""

    models: dict[str, bytes]
    shas: dict[str, str]
    base: str
    files: dict[str, str]

    @classmethod
    def of(cls, spec: SweepSpec) -> "Inputs":
        models = {name: model_bytes_of(path) for name, path in spec.models.items()}
        files = {f: base_text(f) for f in spec.axes.get(TARGET_FILE_AXIS, ())}
        return cls(models, {n: hashlib.sha256(b).hexdigest() for n, b in models.items()},
                   base_text(spec.target), files)

    def key(self, point: Point, spec: SweepSpec) -> str:
        target = json.dumps({k: v for k, v in point.overrides}, sort_keys=True)
        chosen = point.axes.get(TARGET_FILE_AXIS)
        return point_key(self.shas[point.model], (self.files.get(chosen) or self.base) + target, point, spec)


def load_rows(out: Path) -> list[dict[str, Any]]:
    """The rows already recorded in ``out`` (a torn last line from a kill is dropped)."""
    path = out / ROWS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def prepare_output(out: Path, resume: bool) -> list[dict[str, Any]]:
    """The rows to keep: those of a previous run when resuming; refuse to mix with an old sweep otherwise."""
    if (out / ROWS_FILE).exists() and not resume:
        raise WriteError(f"'{out}' already holds a sweep ({ROWS_FILE}); pass --resume to continue it or choose "
                         f"another -o directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create '{out}' ({exc}); choose a writable -o directory") from None
    return load_rows(out) if resume else []


def run_sweep(spec: SweepSpec, out: Path, *, resume: bool = False, serial: bool = False,
              address: str | None = None, num_cpus: int | None = None,
              points: Iterable[Point] | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run every point of ``spec`` not already done in ``out``; return all rows (old and new) in grid order."""
    ray = None if serial else require_ray()
    previous = prepare_output(out, resume)
    inputs = Inputs.of(spec)
    todo: list[tuple[Point, str]] = []
    done = {r["key"]: r for r in previous}
    keys = []
    for p in (list(points) if points is not None else spec.points()):
        k = inputs.key(p, spec)
        keys.append(k)
        if k not in done:
            todo.append((p, k))
    if progress is not None:
        progress({"event": "start", "total": len(keys), "skipped": len(keys) - len(todo)})
    with open(out / ROWS_FILE, "a", encoding="utf-8") as sink:
        def record(row: dict[str, Any]) -> None:
            sink.write(json.dumps(row, default=str) + "\n")
            sink.flush()
            done[row["key"]] = row
            if progress is not None:
                progress({"event": "point", "row": row})

        if serial:
            for p, k in todo:
                record(run_point(p, k, inputs.models[p.model], inputs.base, inputs.files, spec.time_limit_s,
                                 spec.seed))
        elif todo:
            run_on_ray(ray, spec, inputs, todo, record, address, num_cpus, progress)
    return [done[k] for k in dict.fromkeys(keys)]


def failed_count(rows: list[dict[str, Any]]) -> int:
    return sum(r.get("status") == FAILED for r in rows)


__all__ = ["run_sweep", "require_ray", "load_rows", "Inputs", "failed_count"]

"""The sweep spec (``hetc sweep SPEC.toml``): models, a base target, axes over target keys, options.

```toml
name = "npu-sram"
models = ["../../models/tiny_cnn.onnx"]      # relative to the spec file
target = "edge-soc"                          # a preset or a target TOML file
schedulers = ["cpsat"]
time_limit_s = 1.0
validate = ["tiny_cnn.onnx"]                 # functional validation on these models ("all" or [])

[axes]                                       # the grid: every combination of every axis
"memories.npu_sram.size" = ["2MiB", "4MiB", "8MiB"]
"devices.npu.peak.int8" = [2048, 4096]
"dma.dma_npu.bandwidth" = [8.0, 16.0]        # a [[dma]] entry by its name
target_file = ["a.toml", "b.toml"]          # whole alternative base targets (core counts...)

[search]                                     # --search optuna: continuous ranges
"devices.npu.peak.int8" = { min = 1024, max = 8192 }
```
Every mistake is a SpecError naming the spec file, the key and the fix.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetc.errors import HetcError

TARGET_FILE_AXIS = "target_file"
VALIDATE_CHOICES = ("all", "none")
_TOP_KEYS = {"name", "models", "target", "schedulers", "time_limit_s", "seed", "validate", "axes", "search",
             "description"}


class SpecError(HetcError):
    """A sweep spec is missing, malformed or names what does not exist."""


@dataclass(frozen=True)
class Range:
    """A continuous axis for ``--search optuna``: a float in [low, high] (log-uniform when ``log``)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Point:
    """One design point: a model, a scheduler and the target overrides (``key -> value``)."""

    model: str                      # the model's name (its file name)
    scheduler: str
    overrides: tuple[tuple[str, Any], ...]
    validate: bool = False

    @property
    def axes(self) -> dict[str, Any]:
        return dict(self.overrides)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    models: dict[str, Path]                       # name -> file
    target: str                                   # preset name or file path (resolved)
    schedulers: tuple[str, ...]
    axes: dict[str, tuple[Any, ...]]
    search: dict[str, Range] = field(default_factory=dict)
    time_limit_s: float | None = None
    seed: int = 0
    validate: frozenset[str] = frozenset()

    def points(self) -> list[Point]:
        """The full grid: models x schedulers x the product of every axis, in a stable order."""
        keys = list(self.axes)
        combos = list(itertools.product(*(self.axes[k] for k in keys))) if keys else [()]
        return [Point(m, s, tuple(zip(keys, combo)), m in self.validate)
                for m in self.models for s in self.schedulers for combo in combos]


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec '{path}' does not exist; pass a TOML file (see examples/sweeps/)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: TOML syntax error: {exc}; fix the syntax at that line") from None
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: Path) -> SweepSpec:
    def fail(key: str, problem: str, fix: str) -> SpecError:
        return SpecError(f"{path}: key '{key}': {problem}; {fix}")

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(unknown[0], "is not a known key", f"the keys are: {', '.join(sorted(_TOP_KEYS))}")
    base = path.resolve().parent
    models_raw = data.get("models")
    if not isinstance(models_raw, list) or not models_raw or not all(isinstance(m, str) for m in models_raw):
        raise fail("models", f"expected a non-empty array of ONNX paths, got {models_raw!r}",
                   'write models = ["../../models/tiny_cnn.onnx"]')
    models: dict[str, Path] = {}
    for m in models_raw:
        file = (base / m).resolve()
        if not file.is_file():
            raise fail("models", f"'{m}' does not exist (looked at {file})", "paths are relative to the spec file")
        if file.name in models:
            raise fail("models", f"two models are named '{file.name}'", "rename one of them")
        models[file.name] = file
    target = data.get("target", "edge-soc")
    if not isinstance(target, str):
        raise fail("target", f"expected a preset name or a file, got {target!r}", 'write target = "edge-soc"')
    target = _resolve_target(target, base)
    schedulers = data.get("schedulers", ["cpsat"])
    if isinstance(schedulers, str):
        schedulers = [schedulers]
    if not isinstance(schedulers, list) or not schedulers or not all(isinstance(s, str) for s in schedulers):
        raise fail("schedulers", f"expected an array of scheduler names, got {schedulers!r}",
                   'write schedulers = ["cpsat", "heft"]')
    time_limit = data.get("time_limit_s")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or time_limit <= 0):
        raise fail("time_limit_s", f"{time_limit!r} is not a positive number", "write time_limit_s = 1.0")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise fail("seed", f"{seed!r} is not an integer", "write seed = 0")
    axes = _axes(data.get("axes", {}), base, fail)
    search = _search(data.get("search", {}), fail)
    validate = _validate(data.get("validate", "none"), models, fail)
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise fail("name", f"expected a string, got {name!r}", 'write name = "npu-sram"')
    return SweepSpec(name=name, path=path, models=models, target=target, schedulers=tuple(schedulers),
                     axes=axes, search=search, time_limit_s=None if time_limit is None else float(time_limit),
                     seed=seed, validate=validate)


def _resolve_target(target: str, base: Path) -> str:
    """A relative target file is relative to the spec; a preset name stays a name."""
    if target.endswith(".toml") or "/" in target:
        return str((base / target).resolve())
    return target


def _axes(raw: Any, base: Path, fail: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(raw, dict):
        raise fail("axes", f"expected a table, got {raw!r}", 'write [axes] then "memories.npu_sram.size" = [...]')
    axes: dict[str, tuple[Any, ...]] = {}
    for key, values in raw.items():
        if isinstance(values, dict):   # TOML reads an unquoted dotted key as nested tables: flatten them back
            for sub, v in _flatten(values, key).items():
                axes[sub] = _axis_values(sub, v, fail)
            continue
        axes[key] = _axis_values(key, values, fail)
    if TARGET_FILE_AXIS in axes:
        axes[TARGET_FILE_AXIS] = tuple(_resolve_target(str(v), base) for v in axes[TARGET_FILE_AXIS])
    return axes


def _flatten(table: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def _axis_values(key: str, values: Any, fail: Any) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise fail(f"axes.{key}", f"expected a non-empty array of values, got {values!r}",
                   f'write "{key}" = [value1, value2]')
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise fail(f"axes.{key}", "a value is listed twice", "list each value once")
    return tuple(values)


def _search(raw: Any, fail: Any) -> dict[str, Range]:
    if not isinstance(raw, dict):
        raise fail("search", f"expected a table, got {raw!r}", 'write [search] then "key" = { min = 1, max = 2 }')
    out: dict[str, Range] = {}
    for key, r in raw.items():
        if not isinstance(r, dict) or not {"min", "max"} <= set(r) or set(r) - {"min", "max", "log"}:
            raise fail(f"search.{key}", f"expected {{ min = ..., max = ... [, log = true] }}, got {r!r}",
                       f'write "{key}" = {{ min = 1024, max = 8192 }} (quote a dotted key)')
        low, high = r["min"], r["max"]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (low, high)) or not low < high:
            raise fail(f"search.{key}", f"min {low!r} and max {high!r} are not numbers with min < max",
                       "give two numbers, the smaller first")
        out[key] = Range(float(low), float(high), bool(r.get("log", False)),
                         isinstance(low, int) and isinstance(high, int))
    return out


def _validate(raw: Any, models: dict[str, Path], fail: Any) -> frozenset[str]:
    if raw == "all":
        return frozenset(models)
    if raw == "none":
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
        raise fail("validate", f"expected \"all\", \"none\" or an array of model names, got {raw!r}",
                   'write validate = ["tiny_cnn.onnx"]')
    unknown = [m for m in raw if m not in models]
    if unknown:
        raise fail("validate", f"'{unknown[0]}' is not one of the models", f"use one of {', '.join(models)}")
    return frozenset(raw)


def point_key(model_sha256: str, target_text: str, point: Point, spec: SweepSpec) -> str:
    """The content hash ``--resume`` matches: model bytes, derived target, scheduler and build options."""
    h = hashlib.sha256()
    for part in (model_sha256, target_text, point.scheduler, repr(spec.time_limit_s), str(spec.seed),
                 str(point.validate)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]

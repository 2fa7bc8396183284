"""Loading targets from TOML: presets shipped in ``hetc/target/presets/`` or a user's file.

Every mistake raises a ``TargetError`` naming the file, the key and the fix. The structure of each table is
checked here; the checks that span tables (references between memories, devices and DMA engines) are in
``hetc.target.checks``.
"""
from __future__ import annotations

import difflib
import math
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from hetc.errors import TargetError
from hetc.ir.dtypes import _NAME_TO_ONNX
from hetc.target.capability import LIMIT_KEYS
from hetc.target.checks import check_target
from hetc.target.model import Device, DmaEngine, Memory
from hetc.target.ops import EFFICIENCY_KEYS
from hetc.target.target import Target

DEFAULT_PRESET = "edge-soc"
DEVICE_KINDS = ("cpu", "npu", "dsp")
MEMORY_KINDS = ("dram", "sram", "l2")
DTYPES = frozenset(_NAME_TO_ONNX)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


# ---------------------------------------------------------------------------------------------- entry points
def list_presets() -> list[tuple[str, str]]:
    """(name, description) of every preset shipped with hetc, sorted by name."""
    found = []
    for entry in _preset_dir().iterdir():
        if entry.name.endswith(".toml"):
            text = entry.read_text(encoding="utf-8")
            found.append((entry.name.removesuffix(".toml"), str(tomllib.loads(text).get("description", ""))))
    return sorted(found)


def load_target(name_or_path: str | Path = DEFAULT_PRESET) -> Target:
    """A preset by name (``"edge-soc"``) or a target TOML file by path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = path.suffix == ".toml" or "/" in text or "\\" in text or path.is_file()
    if not looks_like_path:
        preset = _preset_dir() / f"{text}.toml"
        if not preset.is_file():
            known = ", ".join(name for name, _ in list_presets())
            raise TargetError(f"unknown target preset '{text}'; the presets are: {known} "
                              f"(or pass the path of a .toml file)")
        return target_from_toml_text(preset.read_text(encoding="utf-8"), f"preset '{text}'")
    if not path.is_file():
        raise TargetError(f"target file '{path}' does not exist; pass an existing .toml file or a preset name "
                          f"({', '.join(name for name, _ in list_presets())})")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"target file '{path}' cannot be read ({exc}); check its permissions and encoding") \
            from None
    return target_from_toml_text(source, str(path))


def target_from_toml_text(text: str, origin: str = "<string>") -> Target:
    """Build a Target from TOML source (a bundle reloads its embedded target this way). ``origin`` names the
    source in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{origin}: TOML syntax error: {exc}; fix the syntax at that line") from None
    top = _Table(origin, "top level", data)
    name = top.require("name", str)
    description = top.optional("description", str, "")
    sync_ns = top.non_negative(top.require("sync_ns", (int, float)), "sync_ns")
    priority = top.optional("priority", list, None)
    dram = top.optional("dram", str, "dram")
    staging = top.optional("staging", str, "")
    memories = {n: _memory(origin, n, t) for n, t in top.tables("memories").items()}
    devices = {n: _device(origin, n, t) for n, t in top.tables("devices").items()}
    dmas = _dmas(origin, top.optional("dma", list, []))
    top.finish()
    if priority is None:
        priority = list(devices)
    target = Target(name=name, description=description, memories=memories, devices=devices, dmas=dmas,
                    sync_ns=float(sync_ns), priority=tuple(str(p) for p in priority), dram=dram, source=text,
                    path=origin, staging=staging)
    check_target(target)
    return target


# ---------------------------------------------------------------------------------------------- tables
def _memory(origin: str, name: str, data: Any) -> Memory:
    t = _Table(origin, f"[memories.{name}]", data)
    size = t.size("size")
    bandwidth = t.positive(t.require("bandwidth", (int, float)), "bandwidth")
    alignment = int(t.positive(t.optional("alignment", int, 64), "alignment"))
    if alignment & (alignment - 1):
        t.fail("alignment", f"{alignment} is not a power of two", "use 1, 2, 4, ... 64, 128, ...")
    kind = t.choice("kind", MEMORY_KINDS, "dram" if name == "dram" else "sram")
    t.finish()
    return Memory(name=name, size=size, bandwidth=float(bandwidth), alignment=alignment, kind=kind)


def _device(origin: str, name: str, data: Any) -> Device:
    t = _Table(origin, f"[devices.{name}]", data)
    kind = t.choice("kind", DEVICE_KINDS, None)
    memory = t.require("memory", str)
    launch_ns = t.non_negative(t.require("launch_ns", (int, float)), "launch_ns")
    peak = _rates(t, "peak")
    for dtype in peak:
        if dtype not in DTYPES:
            t.fail(f"peak.{dtype}", f"'{dtype}' is not a dtype", _suggest(dtype, DTYPES, "use a dtype such as"))
    efficiency = _rates(t, "efficiency")
    for cls, value in efficiency.items():
        if cls not in EFFICIENCY_KEYS:
            t.fail(f"efficiency.{cls}", f"'{cls}' is not an op class", _suggest(cls, EFFICIENCY_KEYS, "use"))
        if value > 1:
            t.fail(f"efficiency.{cls}", f"{value} is above 1", "an efficiency is a fraction of peak in (0, 1]")
    ops = t.optional("ops", list, None)
    dtypes = t.optional("dtypes", list, None)
    for dtype in dtypes or []:
        if dtype not in DTYPES:
            t.fail("dtypes", f"'{dtype}' is not a dtype", _suggest(str(dtype), DTYPES, "use a dtype such as"))
    limits = t.optional("limits", dict, {})
    for key, value in limits.items():
        expected = LIMIT_KEYS.get(key)
        if expected is None:
            t.fail(f"limits.{key}", "unknown limit", _suggest(key, LIMIT_KEYS, "the limits are"))
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            t.fail(f"limits.{key}", f"expected {_TYPE_NAMES[expected]}, got {value!r}",
                   f"write e.g. {key} = {_LIMIT_EXAMPLES[expected]}")
    t.finish()
    return Device(name=name, kind=kind, memory=memory, peak=peak, efficiency=efficiency,
                  launch_ns=float(launch_ns), ops=None if ops is None else frozenset(map(str, ops)),
                  dtypes=None if dtypes is None else frozenset(map(str, dtypes)), limits=dict(limits))


_LIMIT_EXAMPLES = {int: "3", bool: "true", list: '["nearest", "linear"]'}


def _rates(t: "_Table", key: str) -> dict[str, float]:
    table = t.require(key, dict)
    if not table:
        t.fail(key, "is empty", f"give at least one entry, e.g. {key} = {{ float32 = 100.0 }}")
    rates = {}
    for k, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            t.fail(f"{key}.{k}", f"expected a number, got {v!r}", "write a positive number")
        rates[str(k)] = float(t.positive(v, f"{key}.{k}"))
    return rates


def _dmas(origin: str, entries: list[Any]) -> dict[str, DmaEngine]:
    dmas: dict[str, DmaEngine] = {}
    for i, data in enumerate(entries):
        t = _Table(origin, f"[[dma]] #{i + 1}", data)
        name = t.require("name", str)
        t.where = f"[[dma]] '{name}'"
        memories = t.require("memories", list)
        if len(memories) != 2 or not all(isinstance(m, str) for m in memories) or memories[0] == memories[1]:
            t.fail("memories", f"{memories!r} is not two different memory names",
                   'write memories = ["dram", "npu_sram"]')
        bandwidth = t.positive(t.require("bandwidth", (int, float)), "bandwidth")
        latency = t.non_negative(t.require("latency_ns", (int, float)), "latency_ns")
        t.finish()
        if name in dmas:
            t.fail("name", f"DMA engine '{name}' is defined twice", "give every [[dma]] entry its own name")
        dmas[name] = DmaEngine(name=name, memories=(memories[0], memories[1]), bandwidth=float(bandwidth),
                               latency_ns=float(latency))
    return dmas


# ---------------------------------------------------------------------------------------------- helpers
def _preset_dir() -> Any:
    return resources.files("hetc.target") / "presets"


def _suggest(word: str, choices: Any, lead: str) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{lead}: {', '.join(sorted(choices)[:12])}"


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string such as "8MiB", "512 KiB", "4GB" (binary and decimal units)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "B").lower()])


class _Table:
    """One TOML table being read: remembers which keys were used so that unknown (misspelt) keys are errors."""

    def __init__(self, origin: str, where: str, data: Any) -> None:
        self.origin, self.where = origin, where
        if not isinstance(data, dict):
            raise TargetError(f"{origin}: {where} must be a table, got {data!r}; see docs/targets.md")
        self.data, self.used = data, set()

    def fail(self, key: str, problem: str, fix: str) -> None:
        raise TargetError(f"{self.origin}: {self.where} key '{key}': {problem}; {fix}")

    def require(self, key: str, types: type | tuple[type, ...]) -> Any:
        if key not in self.data:
            self.fail(key, "is missing", "add it (see docs/targets.md for every key)")
        return self.optional(key, types, None)

    def optional(self, key: str, types: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        types_ = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, types_) or (isinstance(value, bool) and bool not in types_):
            names = " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in types_)
            self.fail(key, f"expected {names}, got {value!r}", f"write {key} as {names}")
        return value

    def positive(self, value: Any, key: str) -> Any:
        self.finite(value, key)
        if value <= 0:
            self.fail(key, f"{value} is not positive", "use a value above 0")
        return value

    def non_negative(self, value: Any, key: str) -> Any:
        self.finite(value, key)
        if value < 0:
            self.fail(key, f"{value} is negative", "use 0 or more")
        return value

    def finite(self, value: Any, key: str) -> None:
        if not math.isfinite(value):
            self.fail(key, f"{value} is not a finite number", "write an ordinary number")

    def size(self, key: str) -> int:
        raw = self.require(key, (int, str))
        try:
            size = parse_size(raw)
        except ValueError:
            self.fail(key, f"{raw!r} is not a size", 'write bytes as an integer or a string like "8MiB"')
        return int(self.positive(size, key))

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str:
        value = self.require(key, str) if default is None else self.optional(key, str, default)
        if value not in choices:
            self.fail(key, f"'{value}' is not one of {', '.join(choices)}", f"use one of {', '.join(choices)}")
        return value

    def tables(self, key: str) -> dict[str, Any]:
        tables = self.require(key, dict)
        if not tables:
            self.fail(key, "is empty", f"define at least one [{key}.<name>] table")
        return tables

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            self.fail(unknown[0], "is not a known key", _suggest(unknown[0], self.used, "the keys here are"))


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table",
               bool: "a boolean"}

"""A design point's target: the base target's TOML with the point's keys set, read by the normal loader.

Going through the loader (``target_from_toml_text``) means a point is checked exactly as a hand-written
target file would be: a size that does not parse, a negative bandwidth or a misspelt key is that point's
``TargetError``, recorded in its row, and the sweep goes on.
"""
from __future__ import annotations

import copy
import json
import math
import tomllib
from typing import Any

from hetc.errors import TargetError
from hetc.sweep.spec import TARGET_FILE_AXIS
from hetc.target import Target, load_target
from hetc.target.loader import target_from_toml_text


def base_text(target: str) -> str:
    """The TOML source of a preset or target file (what the object store ships once)."""
    return load_target(target).source


def derive_target(base: str, overrides: dict[str, Any], files: dict[str, str] | None = None) -> Target:
    """The target of one point. ``files`` maps a ``target_file`` axis value to its TOML text."""
    overrides = dict(overrides)
    source = base
    if TARGET_FILE_AXIS in overrides:
        chosen = overrides.pop(TARGET_FILE_AXIS)
        source = (files or {}).get(chosen) or base_text(chosen)
    data = tomllib.loads(source)
    for key, value in overrides.items():
        set_key(data, key, value)
    name = data.get("name", "target")
    if overrides:
        data["name"] = f"{name}+" + ",".join(f"{k}={v}" for k, v in overrides.items())
    return target_from_toml_text(dumps_toml(data), f"sweep point {_describe(overrides)}")


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key; ``dma.<name>.<field>`` picks the [[dma]] entry by its name. A path that leads
    nowhere is a TargetError naming the key."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            match = [e for e in node if isinstance(e, dict) and e.get("name") == part]
            if not match:
                names = ", ".join(str(e.get("name")) for e in node if isinstance(e, dict))
                raise TargetError(f"axis '{key}': no entry named '{part}' in [[{parts[i - 1]}]]; the entries are "
                                  f"{names}")
            node = match[0]
        elif isinstance(node, dict):
            if part not in node:
                known = ", ".join(sorted(node))
                raise TargetError(f"axis '{key}': the target has no table '{'.'.join(parts[:i + 1])}'; "
                                  f"the keys there are {known}")
            node = node[part]
        else:
            raise TargetError(f"axis '{key}': '{'.'.join(parts[:i])}' is a value, not a table")
    if not isinstance(node, dict):
        raise TargetError(f"axis '{key}': '{'.'.join(parts[:-1])}' is not a table")
    node[parts[-1]] = copy.deepcopy(value)


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(base target)"


# ---------------------------------------------------------------------------------------------- TOML writer
def dumps_toml(data: dict[str, Any]) -> str:
    """TOML for the subset targets use: scalars, arrays, tables and arrays of tables (no tomli_w needed)."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines) + "\n"


def _table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    tables, arrays = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables:
        lines.append(f"\n[{'.'.join(_key(p) for p in path + [k])}]")
        _table(v, path + [k], lines)
    for k, entries in arrays:
        for e in entries:
            lines.append(f"\n[[{'.'.join(_key(p) for p in path + [k])}]]")
            _table(e, path + [k], lines)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(e)}" for k, e in v.items()) + " }"
    raise TargetError(f"a sweep value {v!r} cannot be written into a target; use a number, string or array")

"""Inputs for validation runs: seeded random tensors per dtype, and checked loading from ``.npz`` files."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import onnx

from hetc.errors import ValidationError
from hetc.frontend.overrides import is_static_dim
from hetc.ir import (FLOAT_DTYPES, INT_DTYPES, Graph, HostType, conform_host_value, dtype_from_onnx,
                     host_type_from_proto, np_dtype)


@dataclass(frozen=True)
class InputSpec:
    """One graph input: IR dtype name and shape (None for a dimension the model leaves symbolic); ``host`` is
    the type of a host value (a sequence, an optional, a string tensor; hetc.ir.host), else None."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    host: HostType | None = None


def _onnx_specs(graph: onnx.GraphProto) -> list[InputSpec]:
    initialized = {t.name for t in graph.initializer}
    specs = []
    for info in graph.input:
        if info.name in initialized:  # IR < 4 lists weights among the inputs
            continue
        if info.type.WhichOneof("value") != "tensor_type" or info.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            host = host_type_from_proto(info.type)
            if host is None:
                raise ValidationError(f"input '{info.name}' is a map or a sparse tensor; hetc does not take those")
            shape = host.shape if host.kind == "tensor" and host.shape is not None else ()
            specs.append(InputSpec(info.name, host.element_dtype or "", shape, host))
            continue
        tensor = info.type.tensor_type
        dims = tuple(d.dim_value if is_static_dim(d) else None for d in tensor.shape.dim)
        specs.append(InputSpec(info.name, dtype_from_onnx(tensor.elem_type), dims))
    return specs


def input_specs(source: Any) -> list[InputSpec]:
    """The inputs of a hetc ``Graph``, an ONNX ``ModelProto``/``GraphProto`` or model file path, a list of
    ``InputSpec`` or ``(name, dtype, shape)`` tuples, or a ``{name: (dtype, shape)}`` mapping."""
    if isinstance(source, (str, Path)):
        from hetc.validate.reference import load_model

        return _onnx_specs(load_model(source).graph)
    if isinstance(source, Graph):
        return [InputSpec(v.name, v.dtype, tuple(v.shape), v.host) for v in source.inputs if v.const is None]
    if isinstance(source, onnx.ModelProto):
        return _onnx_specs(source.graph)
    if isinstance(source, onnx.GraphProto):
        return _onnx_specs(source)
    if isinstance(source, Mapping):
        return [InputSpec(name, dtype, tuple(shape or ()), *rest) for name, (dtype, shape, *rest) in source.items()]
    if isinstance(source, Iterable):
        return [s if isinstance(s, InputSpec) else InputSpec(s[0], s[1], tuple(s[2])) for s in source]
    raise TypeError(f"cannot read input specs from {type(source).__name__}")


def make_inputs(graph_or_input_specs: Any, seed: int = 0, int_range: tuple[int, int] = (0, 10)
                ) -> dict[str, np.ndarray]:
    """Seeded random inputs: floats standard normal, integers uniform in ``[low, high)`` of ``int_range``
    (the default keeps index-like inputs valid for small tables), bools fair coin flips."""
    low, high = int_range
    if low >= high:
        raise ValidationError(f"int_range {int_range} is empty; give (low, high) with low < high")
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in input_specs(graph_or_input_specs):
        if spec.host is not None:
            inputs[spec.name] = _random_host_value(spec.name, spec.host, rng, low, high)
            continue
        if any(d is None for d in spec.shape):
            raise ValidationError(f"input '{spec.name}' has a symbolic dimension {spec.shape}; fix it with "
                                  f"--shape {spec.name}=... (or pass the imported hetc Graph)")
        dtype = np_dtype(spec.dtype)
        if spec.dtype in FLOAT_DTYPES:
            inputs[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif spec.dtype in INT_DTYPES:
            info = np.iinfo(dtype)
            if low < info.min or high - 1 > info.max:
                raise ValidationError(f"int_range {int_range} does not fit input '{spec.name}' of type "
                                      f"{spec.dtype} ({info.min}..{info.max}); choose a range inside it")
            inputs[spec.name] = rng.integers(low, high, size=spec.shape).astype(dtype)
        elif spec.dtype == "bool":
            inputs[spec.name] = rng.random(spec.shape) < 0.5
        else:
            raise ValidationError(f"cannot generate random values for input '{spec.name}' of type "
                                  f"{spec.dtype}; supply the inputs in an .npz file")
    return inputs


# Elements of a random sequence input, and the words of random string tensors.
RANDOM_SEQUENCE_LENGTH = 2
_WORDS = ("alpha", "beta", "gamma", "delta", "monday", "tuesday", "a.b", "x y", "")


def _random_host_value(name: str, host: HostType, rng: np.random.Generator, low: int, high: int) -> object:
    """A seeded random host value: a sequence of RANDOM_SEQUENCE_LENGTH elements, a present optional, a string
    tensor of words; its tensors need static shapes (inside a sequence too)."""
    if host.kind == "sequence" and host.elem is not None:
        return [_random_host_value(name, host.elem, rng, low, high) for _ in range(RANDOM_SEQUENCE_LENGTH)]
    if host.kind == "optional" and host.elem is not None:
        return _random_host_value(name, host.elem, rng, low, high)
    shape = host.static_shape
    if host.kind != "tensor" or shape is None or host.dtype is None:
        raise ValidationError(f"cannot generate random values for input '{name}' of type {host} (its shape or "
                              "element type is open); pass the inputs yourself (Python API: a dict of arrays "
                              "and lists)")
    if host.dtype == "string":
        return np.array(rng.choice(_WORDS, size=shape), dtype=object).reshape(shape)
    spec = make_inputs([InputSpec(name, host.dtype, shape)], seed=int(rng.integers(2**31)), int_range=(low, high))
    return spec[name]


def check_inputs(inputs: Mapping[str, np.ndarray], graph_or_input_specs: Any, origin: str = "inputs"
                 ) -> dict[str, np.ndarray]:
    """``inputs`` if they name exactly the graph's inputs with its dtypes and shapes (symbolic dimensions
    accept any size); otherwise a ValidationError that says what to change."""
    specs = input_specs(graph_or_input_specs)
    expected = {s.name for s in specs}
    missing = sorted(expected - set(inputs))
    unknown = sorted(set(inputs) - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise ValidationError(f"{origin}: {'; '.join(parts)}; the model's inputs are "
                              f"{', '.join(s.name for s in specs) or '(none)'}")
    checked = {}
    for spec in specs:
        if spec.host is not None:
            try:
                checked[spec.name] = conform_host_value(inputs[spec.name], spec.host, spec.name)
            except ValueError as error:
                raise ValidationError(f"{origin}: input {error}") from None
            continue
        array = np.asarray(inputs[spec.name])
        if array.dtype != np_dtype(spec.dtype):
            raise ValidationError(f"{origin}: input '{spec.name}' is {array.dtype}, the model wants {spec.dtype}; "
                                  f"convert it (e.g. array.astype('{spec.dtype}'))")
        if len(array.shape) != len(spec.shape) or any(d is not None and d != a for d, a in
                                                      zip(spec.shape, array.shape)):
            want = "x".join("?" if d is None else str(d) for d in spec.shape) or "scalar"
            got = "x".join(map(str, array.shape)) or "scalar"
            raise ValidationError(f"{origin}: input '{spec.name}' has shape {got}, the model wants {want}")
        checked[spec.name] = array
    return checked


def check_npz_file(path: str | Path) -> Path:
    """``path`` if it is an existing ``.npz`` archive (a zip file); a ValidationError naming the fix
    otherwise. Cheap: commands call it before compiling or loading anything."""
    path = Path(path)
    how = f"write one with numpy.savez('{path}', <input name>=<array>, ...)"
    if not path.exists():
        raise ValidationError(f"input file {path} does not exist; {how}")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ValidationError(f"input file {path} is {kind}, not an .npz file; {how}")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as error:
        raise ValidationError(f"input file {path} cannot be read ({error.strerror or error}); check its "
                              "permissions") from None
    if not is_zip:
        raise ValidationError(f"input file {path} is not a readable .npz archive (not a zip file: numpy.save's "
                              f".npy, text and pickles are not accepted); {how}")
    return path


def load_inputs_npz(path: str | Path, graph: Any) -> dict[str, np.ndarray]:
    """Inputs from an ``.npz`` file (``np.savez(path, name=array, ...)``), checked against ``graph``."""
    path = check_npz_file(path)
    hosted = [s for s in input_specs(graph) if s.host is not None and s.host.kind != "tensor"]
    if hosted:
        raise ValidationError(f"input '{hosted[0].name}' is a {hosted[0].host}, which an .npz archive cannot hold "
                              "(it stores arrays only; string tensors are fine as unicode arrays); pass the "
                              "inputs through the Python API instead (hetc.api.simulate(bundle, {name: [arrays]}))")
    try:
        with np.load(path, allow_pickle=False) as archive:
            loaded = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ValidationError(f"{path} is not a readable .npz archive ({error}); write it with numpy.savez") \
            from None
    return check_inputs(loaded, graph, origin=str(path))

"""hetc as an ONNX backend (``onnx.backend.base``): ``prepare`` compiles a model into a bundle for a target,
``BackendRep.run`` simulates that bundle functionally and returns its outputs.

    import hetc.backend as backend
    rep = backend.prepare(model, target="edge-soc")
    outputs = rep.run([x])          # or rep.run({"x": x}); outputs[0], outputs["y"]

The chip is driven from the host, so the only device name accepted is "CPU" (as in every onnx backend test);
the target chooses the chip. Models whose inputs have dynamic dimensions are compiled lazily, at the first
``run``, with the shapes of the arrays given; a later run with other shapes compiles (and caches) another
bundle. hetc needs every shape static: when one depends on the *value* of a small integer input (a Reshape
target, reduction axes, a window length given as an input), that input is frozen into the bundle as a constant
at the first run, and a run with other values compiles another bundle. Each bundle is saved in a temporary
directory and loaded back for simulation, so what runs is exactly what ``hetc build`` writes; the directory is
removed by ``close()`` or when the rep is garbage collected.
"""
from __future__ import annotations

import re
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

from hetc.codegen import Bundle, load_bundle
from hetc.errors import ModelError, OptionError, ShapeError, ValidationError
from hetc.frontend import MAX_OPSET
from hetc.ir import EXPORT_IR_VERSION
from hetc.pipeline import BuildOptions, BuildResult, build
from hetc.schedule import IdleAcceleratorsWarning
from hetc.sim import PreparedSimulation

SUPPORTED_DEVICES = ("CPU",)
CacheKey = tuple[tuple, tuple]
MAX_FROZEN_ELEMENTS = 64
_INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                  onnx.TensorProto.UINT64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT16, onnx.TensorProto.UINT8}
# The frontend's wording of a shape that depends on input values (hetc/frontend/static_shapes.py).
_DATA_DEPENDENT = re.compile(r"data-dependent shape: .* depends on data computed from inputs? (.*?), or on")


@dataclass(frozen=True)
class CompiledBundle:
    """One compilation of the model: for one set of input shapes (and values of frozen inputs)."""

    result: BuildResult
    bundle: Bundle            # loaded back from ``directory``
    directory: Path
    frozen: tuple[str, ...] = ()  # inputs whose run-time values were compiled in as constants


def _model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Runtime inputs, in graph order (IR < 4 also lists initializers as inputs)."""
    initialized = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initialized]


def _is_static(info: onnx.ValueInfoProto) -> bool:
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        return True  # not a tensor: the frontend reports it with its own message
    tensor = info.type.tensor_type
    return tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim)


def as_array(value: Any, name: str) -> Any:
    """A runtime input as hetc takes it: a numpy array (from an array, a numpy scalar or a TensorProto), or
    for a host value (hetc.ir.host) a list of arrays (a sequence), None (an empty optional), or the element
    of an optional; Sequence/OptionalProtos are converted the same way."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, onnx.SequenceProto):
        return numpy_helper.to_list(value)
    if isinstance(value, onnx.OptionalProto):
        return numpy_helper.to_optional(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [as_array(v, name) for v in value]
    if isinstance(value, (np.ndarray, np.generic, int, float, bool, str)):
        return np.asarray(value)
    raise ModelError(f"input '{name}' is a {type(value).__name__}; pass a numpy array, or a list of arrays "
                     "for a sequence, None for an empty optional (maps are unsupported value types)")


def _check_kind(value: Any, info: onnx.ValueInfoProto) -> Any:
    """``value`` if its Python kind fits the input's ONNX type (an array for a tensor, a list for a sequence,
    None or an element for an optional); else a ModelError that says what to pass."""
    kind = info.type.WhichOneof("value")
    wanted = {"tensor_type": "a numpy array", "sequence_type": "a list of numpy arrays",
              "optional_type": "None or the element"}.get(kind, "a value of its type")
    fits = (isinstance(value, np.ndarray) if kind == "tensor_type" else
            isinstance(value, list) if kind == "sequence_type" else True)
    if not fits:
        raise ModelError(f"input '{info.name}' is given as a {type(value).__name__}, but the model's input is "
                         f"a {kind.removesuffix('_type') if kind else 'value'}; pass {wanted}")
    return value


def _shape_of(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, np.ndarray) else None


class HetcBackendRep(BackendRep):
    """A model prepared for one target; ``run`` simulates it."""

    def __init__(self, model: onnx.ModelProto, options: BuildOptions) -> None:
        self.model = model
        self.options = options
        self.input_names = [i.name for i in _model_inputs(model)]
        self._infos = {i.name: i for i in _model_inputs(model)}
        self.output_names = [o.name for o in model.graph.output]
        # Small integer inputs that decide a shape (a Reshape target, reduction axes, a window length) are
        # frozen into the bundle once seen; a run with other values compiles another bundle.
        self.frozen_inputs: list[str] = []
        self._compiled: dict[CacheKey, CompiledBundle] = {}
        # One prepared simulation per compiled bundle (which lives as long as the rep) and precision.
        self._prepared: dict[tuple[int, str], PreparedSimulation] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="hetc-backend-")
        self._cleanup = weakref.finalize(self, self._tmp.cleanup)
        self._static = all(_is_static(i) for i in _model_inputs(model))
        if self._static:
            try:
                self._compile({}, {})
            except ShapeError as error:
                if not self._freezable(error, None):
                    raise
                self._static = False  # the values decide: compile at the first run

    # ------------------------------------------------------------------ compilation
    @property
    def compiled(self) -> list[CompiledBundle]:
        """Every compilation so far (one per distinct set of input shapes and frozen input values)."""
        return list(self._compiled.values())

    def _freezable(self, error: ShapeError, arrays: dict[str, np.ndarray] | None) -> list[str]:
        """The inputs a data-dependent-shape error names that are small integer tensors (not frozen yet)."""
        found = _DATA_DEPENDENT.search(str(error))
        if not found:
            return []
        names = [n for n in re.findall(r"'([^']*)'", found.group(1)) if n in self.input_names]
        dtypes = {i.name: i.type.tensor_type.elem_type for i in _model_inputs(self.model)}
        return [n for n in names if n not in self.frozen_inputs and dtypes.get(n) in _INTEGER_TYPES
                and (arrays is None or (isinstance(arrays[n], np.ndarray) and arrays[n].size <= MAX_FROZEN_ELEMENTS))]

    def _specialized_model(self, frozen: dict[str, np.ndarray]) -> onnx.ModelProto:
        if not frozen:
            return self.model
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        kept = [i for i in model.graph.input if i.name not in frozen]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in frozen.items())
        return model

    def _compile(self, shapes: dict[str, tuple[int, ...]], frozen: dict[str, np.ndarray]) -> CompiledBundle:
        key: CacheKey = (tuple(sorted(shapes.items())),
                         tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in sorted(frozen.items())))
        if key in self._compiled:
            return self._compiled[key]
        if not self._cleanup.alive:
            raise OptionError("this backend rep was closed; prepare the model again to run it")
        options = BuildOptions(**{**vars(self.options), "shapes": shapes or None})
        with warnings.catch_warnings():  # one-node conformance models often belong on the CPU: not news here
            warnings.simplefilter("ignore", IdleAcceleratorsWarning)
            result = build(self._specialized_model(frozen), options)
        directory = result.save(Path(self._tmp.name) / f"bundle{len(self._compiled)}")
        compiled = CompiledBundle(result=result, bundle=load_bundle(directory), directory=directory,
                                  frozen=tuple(frozen))
        self._compiled[key] = compiled
        return compiled

    def _bundle_for(self, arrays: dict[str, np.ndarray]) -> CompiledBundle:
        while True:
            frozen = {n: arrays[n] for n in self.frozen_inputs}
            shapes = {} if self._static else {n: _shape_of(a) for n, a in arrays.items()
                                              if n not in frozen and _shape_of(a) is not None}
            try:
                return self._compile(shapes, frozen)
            except ShapeError as error:
                names = self._freezable(error, arrays)
                if not names:
                    raise
                self.frozen_inputs += names

    # ------------------------------------------------------------------ running
    def _named_inputs(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            unknown = sorted(set(inputs) - set(self.input_names))
            missing = [n for n in self.input_names if n not in inputs]
            if unknown or missing:
                problems = ([f"{unknown} are not inputs of the model"] if unknown else []) + (
                    [f"{missing} are missing"] if missing else [])
                raise ValidationError(f"{' and '.join(problems)}; pass exactly the model's inputs "
                                      f"{self.input_names}")
            return {n: _check_kind(as_array(inputs[n], n), self._infos[n]) for n in self.input_names}
        if isinstance(inputs, (np.ndarray, onnx.TensorProto)):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.input_names):
            raise ValidationError(f"{len(inputs)} inputs given, the model takes {len(self.input_names)} "
                                  f"({', '.join(self.input_names) or 'none'}); pass them in this order or as a dict")
        return {n: _check_kind(as_array(v, n), self._infos[n]) for n, v in zip(self.input_names, inputs)}

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Simulate the bundle on ``inputs`` (a list in graph-input order, or a dict); the outputs in
        graph-output order, as a namedtuple also indexable by output name. ``precision`` may be given."""
        arrays = self._named_inputs(inputs)
        compiled = self._bundle_for(arrays)
        runtime = {n: a for n, a in arrays.items() if n not in compiled.frozen}
        precision = kwargs.get("precision", self.options.precision)
        key = (id(compiled.bundle), precision)
        if key not in self._prepared:
            self._prepared[key] = PreparedSimulation(compiled.bundle, precision=precision)
        sim = self._prepared[key].run(runtime)
        produced = sim.outputs or {}
        missing = [n for n in self.output_names if n not in produced]
        if missing:
            raise ModelError(f"the bundle produced no value for graph outputs {missing}; "
                             "this is a hetc bug, please report it with the model")
        return namedtupledict("Outputs", self.output_names)(*(produced[n] for n in self.output_names))

    def close(self) -> None:
        """Remove the bundles' temporary directory now rather than at garbage collection."""
        self._cleanup()

    def __enter__(self) -> "HetcBackendRep":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_device(device: str) -> None:
    if not HetcBackend.supports_device(device):
        raise OptionError(f"device '{device}' is not supported: the hetc chip is driven from the host, pass "
                          "device='CPU' and choose the chip with target=...")


class HetcBackend(Backend):
    """The ONNX backend interface over ``hetc.pipeline.build`` and ``hetc.sim.simulate``."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", target: str | Path = "edge-soc",
                scheduler: str = "cpsat", **kwargs: Any) -> HetcBackendRep:
        """Compile ``model`` for ``target``; further keyword arguments are ``BuildOptions`` fields
        (``time_limit_s``, ``num_workers``, ``seed``, ``precision``, ``dims``...)."""
        _check_device(device)
        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        if not isinstance(model, onnx.ModelProto):
            raise ModelError(f"prepare expects an onnx.ModelProto or a path, not {type(model).__name__}")
        allowed = set(BuildOptions.__dataclass_fields__) - {"target", "scheduler", "shapes", "validate",
                                                            "inputs", "input_seed", "gantt"}
        # onnx's test runner passes rtol/atol through prepare(); they are comparison settings, not ours.
        unknown = sorted(set(kwargs) - allowed - {"rtol", "atol"})
        if unknown:
            raise OptionError(f"unknown prepare() options {unknown}; accepted: {sorted(allowed)}")
        options = BuildOptions(target=target, scheduler=scheduler,
                               **{k: v for k, v in kwargs.items() if k in allowed})
        return HetcBackendRep(model, options)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        with cls.prepare(model, device, **kwargs) as rep:
            return rep.run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node: it becomes a one-node model whose inputs are typed from ``inputs`` (a list in
        ``node.input`` order, or a dict); ``opset_version`` may be given."""
        opset = kwargs.pop("opset_version", None) or min(onnx.defs.onnx_opset_version(), MAX_OPSET)
        names = [n for n in node.input if n]
        arrays = ({n: as_array(inputs[n], n) for n in names} if isinstance(inputs, Mapping)
                  else {n: as_array(v, n) for n, v in zip(names, inputs)})
        graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for n, a in arrays.items()]
        graph_outputs = []
        for i, name in enumerate(o for o in node.output if o):
            if outputs_info and i < len(outputs_info):
                dtype, shape = outputs_info[i]
                graph_outputs.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
            else:
                graph_outputs.append(helper.make_empty_tensor_value_info(name))
        graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs, graph_outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = EXPORT_IR_VERSION
        # Outputs not described by outputs_info take the types ONNX's shape inference gives them.
        inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model).graph.output}
        for output in model.graph.output:
            if not output.type.tensor_type.elem_type and inferred[output.name].type.tensor_type.elem_type:
                output.CopyFrom(inferred[output.name])
        return cls.run_model(model, arrays, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().split(":")[0] in SUPPORTED_DEVICES


prepare = HetcBackend.prepare
run_model = HetcBackend.run_model
run_node = HetcBackend.run_node
supports_device = HetcBackend.supports_device
is_compatible = HetcBackend.is_compatible

__all__ = ["HetcBackend", "HetcBackendRep", "CompiledBundle", "prepare", "run_model", "run_node",
           "supports_device", "is_compatible"]

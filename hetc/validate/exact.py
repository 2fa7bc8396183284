"""The float64 reference: the original model with every float32 tensor widened to float64, run by onnxruntime
when it has a double kernel for every node, else by ``onnx.reference``. It is what the validation rule
(hetc.validate.compare) measures both hetc and onnxruntime's own float32 run against; when neither runtime can
run the widened model the rule falls back to the fixed tolerance, and the report says so.

Widening keeps the model's meaning: float32 initializers, graph inputs/outputs/value_info, Constant and
ConstantOfShape values and ``Cast(to=FLOAT)`` become float64, in subgraphs too. Float inputs that the operator
schema pins to float32 (a Resize's scales) are left alone; onnx.reference does not check types, so it accepts
the mixed model even where onnxruntime does not. onnx.reference runs with corrected implementations of the
operators it gets wrong (``_corrected_ops``: LRN).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from hetc.ir import EXPORT_IR_VERSION
from hetc.target.ops import PARAMETER_INPUTS

_FLOAT, _DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE
# Attributes naming an output element type: float32 there becomes float64.
_DTYPE_ATTRS = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                "RandomNormalLike": "dtype", "RandomUniformLike": "dtype", "Multinomial": "dtype",
                "Bernoulli": "dtype"}
# Inputs that must stay float32 whatever the data type (operator schemas constrain them to tensor(float)).
_FLOAT32_INPUTS = {**PARAMETER_INPUTS, "Upsample": frozenset({1})}


@dataclass(frozen=True)
class ExactReference:
    """Float64 outputs by name (host values as the float32 reference returns them) and who computed them:
    ``"onnxruntime float64"``, ``"onnx.reference float64"``, or ``None`` with ``why`` when neither could."""

    outputs: dict[str, object]
    source: str | None
    why: str = ""


def widen_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64 wherever it computed in float32."""
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    pinned = _pinned_float32_names(wide.graph)
    _widen_graph(wide.graph, pinned)
    # IR 3 wants every initializer listed as a graph input; the converter and onnxruntime take IR 9 as is.
    wide.ir_version = EXPORT_IR_VERSION
    return wide


def exact_outputs(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], evaluator_only: bool = False
                  ) -> ExactReference:
    """The widened model's outputs on ``inputs`` (float32 inputs widened exactly), or why there are none.
    ``evaluator_only``: skip onnxruntime (a model drawing seeded random numbers, which hetc draws with
    onnx.reference's generator)."""
    from hetc.validate.reference import as_output

    from hetc.frontend.contrib import lower_contrib_ops

    # Contrib ops with a standard equivalent (hetc.frontend.contrib) have no double kernel anywhere.
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    try:
        wide = widen_model(lower_contrib_ops(lowered))
    except Exception as error:  # noqa: BLE001 - an odd model must not stop validation: fall back, say why
        return ExactReference({}, None, f"cannot widen the model to float64: {_first_line(error)}")
    feeds = {name: (np.asarray(v, np.float64) if np.asarray(v).dtype == np.float32 else v)
             for name, v in inputs.items()}
    names = [o.name for o in wide.graph.output]
    reasons = []
    if not evaluator_only:
        try:
            results = _run_onnxruntime(wide, feeds)
            return ExactReference({n: as_output(r) for n, r in zip(names, results)}, "onnxruntime float64")
        except Exception as error:  # noqa: BLE001 - onnxruntime has no double kernel for many ops (Conv, pools)
            reasons.append(f"onnxruntime: {_first_line(error)}")
    try:
        from onnx.reference import ReferenceEvaluator

        results = ReferenceEvaluator(_upgraded(wide), new_ops=_corrected_ops()).run(None, feeds)
        return ExactReference({n: as_output(r) for n, r in zip(names, results)}, "onnx.reference float64")
    except Exception as error:  # noqa: BLE001 - the evaluator raises plain exceptions for unknown ops
        reasons.append(f"onnx.reference: {_first_line(error)}")
    return ExactReference({}, None, "; ".join(reasons))


def _corrected_ops() -> list[type]:
    """Operators onnx.reference implements against the spec, replaced by correct ones. Its LRN (onnx 1.17-1.20
    at least) loops over the batch instead of the channels, so with one image only channel 0 is normalised:
    the float64 reference of every model with an LRN (AlexNet, ZFNet, Inception-v1) was off by ~1e-3 of its
    scale, which the rule took for onnxruntime's float32 error and so tolerated 16 times that in hetc."""
    from onnx.reference.op_run import OpRun

    class LRN(OpRun):
        op_domain = ""

        def _run(self, x, alpha=None, beta=None, bias=None, size=None):  # type: ignore[no-untyped-def]
            return (local_response_normalization(x, alpha, beta, bias, size),)
    return [LRN]


def local_response_normalization(x: np.ndarray, alpha: float, beta: float, bias: float, size: int) -> np.ndarray:
    """ONNX LRN: ``x / (bias + alpha / size * square_sum) ** beta``, ``square_sum`` over the channels
    ``c - floor((size - 1) / 2)`` .. ``c + ceil((size - 1) / 2)`` (clipped to the tensor), in x's dtype."""
    below, above = (size - 1) // 2, size // 2
    channels = x.shape[1]
    padded = np.pad(np.square(x), [(0, 0), (below, above)] + [(0, 0)] * (x.ndim - 2))
    square_sum = sum(padded[:, k:k + channels] for k in range(size))
    return (x / (bias + (alpha / size) * square_sum) ** beta).astype(x.dtype)


def _upgraded(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` converted to opset ``_EVALUATOR_OPSET`` when it is older. onnx.reference implements some old
    operator versions wrongly (opset-9 BatchNormalization computes batch statistics, since it fills in the
    schema's default momentum), while the converted nodes carry the inference semantics onnxruntime runs.
    The model as it is when the converter cannot convert it."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), _EVALUATOR_OPSET)
    if opset >= _EVALUATOR_OPSET:
        return model
    try:
        return version_converter.convert_version(model, _EVALUATOR_OPSET)
    except Exception:  # noqa: BLE001 - the converter lacks adapters for some ops; the model is still runnable
        return model


_EVALUATOR_OPSET = 21


def _run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, object]) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # No graph rewrites: onnxruntime's fusions may reassociate, and this run is the exact reference.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def _pinned_float32_names(graph: onnx.GraphProto) -> set[str]:
    """Tensors read where the schema requires float32 (in this graph or its subgraphs)."""
    pinned: set[str] = set()
    for node in graph.node:
        for index in _FLOAT32_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index]:
                pinned.add(node.input[index])
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                pinned |= _pinned_float32_names(sub)
    return pinned


def _widen_graph(graph: onnx.GraphProto, pinned: set[str]) -> None:
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == _FLOAT and tensor.name not in pinned:
            graph.initializer[index].CopyFrom(_widen_tensor(tensor))
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.name not in pinned:
            _widen_type(info.type)
    for node in graph.node:
        outputs_pinned = any(o in pinned for o in node.output)
        if node.op_type == "Constant" and not outputs_pinned:
            _widen_float_constant(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _widen_graph(attr.g, pinned)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _widen_graph(sub, pinned)
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _FLOAT and not outputs_pinned:
                attr.t.CopyFrom(_widen_tensor(attr.t))
            elif (attr.type == onnx.AttributeProto.INT and attr.i == _FLOAT and not outputs_pinned
                  and _DTYPE_ATTRS.get(node.op_type) == attr.name):
                attr.i = _DOUBLE


def _widen_float_constant(node: onnx.NodeProto) -> None:
    """A Constant spelled ``value_float``/``value_floats`` (float32 by definition) as a float64 ``value``."""
    for attr in list(node.attribute):
        if attr.name in ("value_float", "value_floats"):
            data = attr.f if attr.name == "value_float" else list(attr.floats)
            node.attribute.remove(attr)
            node.attribute.append(onnx.helper.make_attribute(
                "value", numpy_helper.from_array(np.array(data, np.float64))))


def _widen_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _widen_type(type_proto: onnx.TypeProto) -> None:
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type" and type_proto.tensor_type.elem_type == _FLOAT:
        type_proto.tensor_type.elem_type = _DOUBLE
    elif kind == "sequence_type":
        _widen_type(type_proto.sequence_type.elem_type)
    elif kind == "optional_type":
        _widen_type(type_proto.optional_type.elem_type)
    elif kind == "map_type":
        _widen_type(type_proto.map_type.value_type)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]

"""The reference: the original ONNX model run by onnxruntime, or by ``onnx.reference`` (with a warning)
when onnxruntime refuses to load it, e.g. a model stamped with an opset newer than onnxruntime knows, or
when the model draws seeded random numbers: hetc draws those with onnx.reference's generator (a seeded
training-mode Dropout, see docs/kernels.md), which onnxruntime's differs from."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import warnings

import numpy as np
import onnx

from hetc.errors import ModelError, ValidationError
from hetc.ir import EXPORT_IR_VERSION
from hetc.sim.kernels.cpu import draws_seeded_mask, onnxruntime_u8s8_saturates
from hetc.validate.inputs import check_inputs


def load_model(model_path_or_proto: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The model itself, or the model read from a file (external data included); ModelError otherwise."""
    if isinstance(model_path_or_proto, onnx.ModelProto):
        return model_path_or_proto
    path = Path(model_path_or_proto)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check the path")
    try:
        return onnx.load(str(path))  # loads external data stored next to the file
    except Exception as error:  # noqa: BLE001 - protobuf raises several unrelated types
        raise ModelError(f"cannot read {path} as an ONNX model: {error}") from None


def _session(model: onnx.ModelProto):
    """An onnxruntime session; a model stamped with an IR version newer than onnxruntime accepts (onnx
    1.23 writes 14 by default) is retried at the IR version hetc exports, which it accepts."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no raw, ANSI-coloured onnxruntime warnings on the user's stderr
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as first_error:  # noqa: BLE001 - onnxruntime raises its own exception types
        if model.ir_version <= EXPORT_IR_VERSION:
            raise ModelError(f"onnxruntime cannot load the model: {first_error}") from None
        downgraded = onnx.ModelProto()
        downgraded.CopyFrom(model)
        downgraded.ir_version = EXPORT_IR_VERSION
        try:
            return ort.InferenceSession(downgraded.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001
            raise ModelError(f"onnxruntime cannot load the model (also at IR version {EXPORT_IR_VERSION}): "
                             f"{error}") from None


def reference_outputs(model_path_or_proto: str | Path | onnx.ModelProto, inputs: Mapping[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """Every graph output of the original model on ``inputs``, computed by onnxruntime (onnx.reference when
    onnxruntime cannot load the model)."""
    model = load_model(model_path_or_proto)
    feeds = check_inputs(inputs, model, origin="reference inputs")
    seeded = seeded_random_node(model)
    if seeded is not None:
        return _reference_evaluator_outputs(model, feeds, f"{seeded} draws seeded random numbers, which hetc "
                                            "draws with onnx.reference's generator")
    exact = exact_integer_matmuls(model) if onnxruntime_u8s8_saturates() else None
    if exact is not None:
        model, count = exact
        warnings.warn(f"onnxruntime's MatMulInteger(uint8, int8) saturates on this CPU (its AVX2 kernel adds pairs "
                      f"of products in int16); the reference computes the model's {count} such node(s) as exact "
                      f"int32 MatMuls, as ONNX specifies", RuntimeWarning, stacklevel=2)
    try:
        session = _session(model)
    except ModelError as refusal:
        return _reference_evaluator_outputs(model, feeds, str(refusal))
    try:
        results = session.run(None, feeds)
    except Exception as error:  # noqa: BLE001
        raise ValidationError(f"onnxruntime failed to run the reference model on these inputs: {error}") \
            from None
    return {out.name: as_output(r) for out, r in zip(session.get_outputs(), results)}


def exact_integer_matmuls(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int] | None:
    """A copy of ``model`` whose top-level MatMulInteger nodes with a uint8 first and an int8 second operand
    compute as ONNX specifies, in int32 (operands cast, zero points subtracted, an int32 MatMul), and how
    many; None when it has no such node."""
    from onnx import TensorProto, helper

    types = {t.name: t.data_type for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - inference may stop at a contrib op; what it typed before is enough
        inferred = model.graph
    for v in (*inferred.input, *inferred.value_info, *inferred.output):
        types.setdefault(v.name, v.type.tensor_type.elem_type)
    # scalars: a per-row zero point of A (1-D, size M) would need reshaping to broadcast; such nodes stay
    scalar = {t.name for t in model.graph.initializer if np.prod(t.dims, dtype=np.int64) <= 1} | {""}
    for n in model.graph.node:     # DynamicQuantizeLinear's outputs are uint8 whatever inference reached
        if n.op_type == "DynamicQuantizeLinear" and n.domain in ("", "ai.onnx"):
            types.setdefault(n.output[0], TensorProto.UINT8)
            types.setdefault(n.output[2], TensorProto.UINT8)
            scalar.add(n.output[2])
    nodes, count = [], 0
    for n in model.graph.node:
        operands = list(n.input) + [""] * (4 - len(n.input))
        if not (n.op_type == "MatMulInteger" and n.domain in ("", "ai.onnx") and operands[2] in scalar
                and types.get(operands[0]) == TensorProto.UINT8 and types.get(operands[1]) == TensorProto.INT8):
            nodes.append(n)
            continue
        count += 1
        stem = f"hetc_exact_{count}_"
        wide = []
        for k, (x, zero) in enumerate(((operands[0], operands[2]), (operands[1], operands[3]))):
            nodes.append(helper.make_node("Cast", [x], [f"{stem}{k}"], to=TensorProto.INT32))
            if zero:
                nodes.append(helper.make_node("Cast", [zero], [f"{stem}{k}_zero"], to=TensorProto.INT32))
                nodes.append(helper.make_node("Sub", [f"{stem}{k}", f"{stem}{k}_zero"], [f"{stem}{k}_centred"]))
                wide.append(f"{stem}{k}_centred")
            else:
                wide.append(f"{stem}{k}")
        nodes.append(helper.make_node("MatMul", wide, list(n.output), name=n.name))
    if not count:
        return None
    exact = onnx.ModelProto()
    exact.CopyFrom(model)
    del exact.graph.node[:]
    exact.graph.node.extend(nodes)
    return exact, count


def seeded_random_node(model: onnx.ModelProto) -> str | None:
    """The first top-level node whose output hetc draws with onnx.reference's seeded generator."""
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and draws_seeded_mask(
                node.op_type, {a.name for a in node.attribute}, len(node.input) > 2 and bool(node.input[2])):
            return f"{node.op_type} '{node.name or node.output[0]}'"
    return None


def _reference_evaluator_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                                 why: str) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(model)
    except Exception as error:  # noqa: BLE001 - the evaluator raises plain exceptions for unknown ops
        raise ModelError(f"{why}; onnx.reference cannot load it: {_first_line(error)}") from None
    warnings.warn(f"{why.splitlines()[0][:300]}; the reference outputs come from onnx.reference instead",
                  RuntimeWarning, stacklevel=3)
    try:
        results = evaluator.run(None, dict(feeds))
    except Exception as error:  # noqa: BLE001
        raise ValidationError(f"onnx.reference failed to run the reference model on these inputs: "
                              f"{_first_line(error)}") from None
    return {out.name: as_output(r) for out, r in zip(model.graph.output, results)}


def as_output(result: object) -> object:
    """A runtime's output as hetc returns it: an array, or for a host value a list of arrays (a sequence),
    None (an empty optional), a string tensor as an ``object`` array."""
    if result is None:
        return None
    if isinstance(result, (list, tuple)):
        return [as_output(r) for r in result]
    array = np.asarray(result)
    return array.astype(object) if array.dtype.kind in "US" else array


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]

"""ONNX's whole-model shape inference, run without the bytes of the large initializers it never reads."""
from __future__ import annotations

import onnx

from hetc.errors import ShapeError


def infer_shapes(model: onnx.ModelProto, strict: bool = True) -> onnx.ModelProto:
    """ONNX's whole-model inference with data propagation; a ShapeError if it fails. Not ``strict``, a node it
    cannot infer is left untyped instead (a branch's nested If whose branch not taken is invalid for the
    static shapes: the import inlines the branch taken, then infers it strictly)."""
    weights = _take_weights(model)   # shape inference reads their types and shapes, never their bytes
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
    except Exception as error:  # noqa: BLE001 - InferenceError, ValidationError, RuntimeError from C++
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[0] if lines else type(error).__name__
        raise ShapeError(f"shape inference failed: {detail[:400]}; the model's types or shapes are "
                         "inconsistent (or an operator is unknown to onnx)") from error
    finally:
        _give_weights(model, weights)
    _give_weights(inferred, weights)
    return inferred


# Initializers at least this large go through shape inference without their bytes: serialising them to the
# C++ inference and parsing them back took 4 of VGG-19's 11 s of import. Tensors whose values inference may
# propagate (shapes, axes, pads, repeats) are a few dozen bytes.
_WEIGHT_BYTES = 1 << 16


def _take_weights(model: onnx.ModelProto) -> dict[str, bytes]:
    """Remove the raw bytes of the main graph's large initializers, by name."""
    taken = {}
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data"):
            data = tensor.raw_data
            if len(data) >= _WEIGHT_BYTES:
                taken[tensor.name] = data
                tensor.ClearField("raw_data")
    return taken


def _give_weights(model: onnx.ModelProto, weights: dict[str, bytes]) -> None:
    for tensor in model.graph.initializer:
        if tensor.name in weights:
            tensor.raw_data = weights[tensor.name]

"""ONNX's whole-model shape inference, run without the bytes of the large initializers it never reads."""
from __future__ import annotations

import onnx

from hetc.errors import ShapeError
from hetc.frontend.loader import weightless


def infer_shapes(model: onnx.ModelProto, strict: bool = True) -> onnx.ModelProto:
    """ONNX's whole-model inference with data propagation; a ShapeError if it fails. Not ``strict``, a node it
    cannot infer is left untyped instead (a branch's nested If whose branch not taken is invalid for the
    static shapes: the import inlines the branch taken, then infers it strictly). The model returned carries
    the inferred types but not the bytes of large initializers (``weightless``): take those from ``model``."""
    try:
        return onnx.shape_inference.infer_shapes(weightless(model), strict_mode=strict, data_prop=True)
    except Exception as error:  # noqa: BLE001 - InferenceError, ValidationError, RuntimeError from C++
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[0] if lines else type(error).__name__
        raise ShapeError(f"shape inference failed: {detail[:400]}; the model's types or shapes are "
                         "inconsistent (or an operator is unknown to onnx)") from error

"""The reference: the original ONNX model run by onnxruntime."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from hetc.errors import ModelError, ValidationError
from hetc.ir import EXPORT_IR_VERSION
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

    try:
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as first_error:  # noqa: BLE001 - onnxruntime raises its own exception types
        if model.ir_version <= EXPORT_IR_VERSION:
            raise ModelError(f"onnxruntime cannot load the model: {first_error}") from None
        downgraded = onnx.ModelProto()
        downgraded.CopyFrom(model)
        downgraded.ir_version = EXPORT_IR_VERSION
        try:
            return ort.InferenceSession(downgraded.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001
            raise ModelError(f"onnxruntime cannot load the model (also at IR version {EXPORT_IR_VERSION}): "
                             f"{error}") from None


def reference_outputs(model_path_or_proto: str | Path | onnx.ModelProto, inputs: Mapping[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """Every graph output of the original model on ``inputs``, computed by onnxruntime."""
    model = load_model(model_path_or_proto)
    feeds = check_inputs(inputs, model, origin="reference inputs")
    session = _session(model)
    try:
        results = session.run(None, feeds)
    except Exception as error:  # noqa: BLE001
        raise ValidationError(f"onnxruntime failed to run the reference model on these inputs: {error}") \
            from None
    return {out.name: np.asarray(r) for out, r in zip(session.get_outputs(), results)}

"""Run ONNX's official per-operator conformance cases (``onnx.backend.test.case.node``) through the
NPU/DSP kernels: single-node cases of kernel-set ops, compared at each case's own tolerances (rtol 1e-3,
atol 1e-7 for most), as ONNX's backend test runner does."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from hetc.ir import EXPORT_IR_VERSION, dtype_from_numpy, dtype_from_onnx
from hetc.sim.kernels.dispatch import KERNEL_OPS, run_kernel
from hetc.sim.kernels.errors import KernelError
from hetc.sim.kernels.onnx_attrs import plain_attrs

if TYPE_CHECKING:
    from onnx.backend.test.case.test_case import TestCase


@dataclass(frozen=True)
class CaseResult:
    name: str
    op_type: str
    # "pass"; "ort" (differs from ONNX's expected output exactly as onnxruntime does, the runtime hetc
    # matches); "fail"; "unsupported" (the kernel refused with a KernelError: the node belongs on the CPU)
    status: str
    detail: str = ""


@functools.lru_cache(maxsize=1)
def kernel_cases() -> tuple[TestCase, ...]:
    """The single-node conformance cases whose op has an NPU/DSP kernel (function-expanded variants are
    multi-node models of other ops and are left out). Collected once per process: generating them takes
    seconds."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return tuple(c for c in cases if len(c.model.graph.node) == 1 and c.model.graph.node[0].domain in ("", "ai.onnx")
            and c.model.graph.node[0].op_type in KERNEL_OPS and "_expanded" not in c.name)


def _declared_outputs(model: onnx.ModelProto, expected: dict[str, np.ndarray]) -> list[tuple[str, tuple]]:
    """Dtype and shape of each node output: from the expected data when the graph lists it, otherwise
    from ONNX shape inference (e.g. Dropout's mask when only the output is checked)."""
    node = model.graph.node[0]
    inferred = {}
    if any(name not in expected for name in node.output if name):
        typed = onnx.shape_inference.infer_shapes(model)
        for info in list(typed.graph.value_info) + list(typed.graph.output):
            tensor = info.type.tensor_type
            inferred[info.name] = (dtype_from_onnx(tensor.elem_type), tuple(d.dim_value for d in tensor.shape.dim))
    declared = []
    for name in node.output:
        if name in expected:
            declared.append((dtype_from_numpy(expected[name].dtype), tuple(expected[name].shape)))
        elif name in inferred:
            declared.append(inferred[name])
        else:
            break
    return declared


def _as_array(value: object) -> object:
    """Case data holds arrays, numpy scalars and (for exotic dtypes) TensorProtos; sequences stay as they are."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    return value


def run_case(case: TestCase, device_kind: str = "npu") -> CaseResult:
    model = case.model
    graph, node = model.graph, model.graph.node[0]
    opset = {(o.domain or ""): o.version for o in model.opset_import}
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    feed_names = [i.name for i in graph.input if i.name not in constants]
    for inputs, outputs in case.data_sets:
        values = dict(constants, **dict(zip(feed_names, map(_as_array, inputs))))
        expected = {o.name: _as_array(v) for o, v in zip(graph.output, outputs)}
        args = [values.get(name) if name else None for name in node.input]
        if any(a is not None and not isinstance(a, np.ndarray) for a in args):
            return CaseResult(case.name, node.op_type, "unsupported", "non-tensor input")
        try:
            actual = run_kernel(device_kind, node.op_type, node.domain, plain_attrs(node), args,
                                _declared_outputs(model, expected), opset)
        except KernelError as error:
            return CaseResult(case.name, node.op_type, "unsupported", str(error))
        except Exception as error:  # noqa: BLE001 - a crashing kernel is a failed case, reported as such
            return CaseResult(case.name, node.op_type, "fail", f"{type(error).__name__}: {error}")
        mismatch = _mismatch(dict(zip(node.output, actual)), expected, case.rtol, case.atol)
        if mismatch:
            ort_outputs = _onnxruntime_outputs(model, dict(zip(feed_names, map(_as_array, inputs))))
            if ort_outputs is not None and not _mismatch(dict(zip(node.output, actual)), ort_outputs, case.rtol,
                                                         case.atol):
                return CaseResult(case.name, node.op_type, "ort", f"onnxruntime agrees with hetc: {mismatch}")
            return CaseResult(case.name, node.op_type, "fail", mismatch)
    return CaseResult(case.name, node.op_type, "pass")


def _mismatch(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float, atol: float) -> str:
    """Empty when every expected output matches, else a description of the first mismatch."""
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            continue
        if want.dtype.kind not in "fciub":  # ml_dtypes floats (bfloat16...) compare as float32
            got, want = got.astype(np.float32), want.astype(np.float32)
        try:
            if want.dtype.kind in "fc":
                np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
            else:
                np.testing.assert_array_equal(got, want)
        except AssertionError as error:
            return f"output {name}: {' '.join(str(error).split())[:400]}"
    return ""


def _onnxruntime_outputs(model: onnx.ModelProto, feeds: dict[str, object]) -> dict[str, np.ndarray] | None:
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, EXPORT_IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no raw, ANSI-coloured onnxruntime warnings on stderr
    try:
        session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = session.run(None, feeds)
    except Exception:  # noqa: BLE001 - no onnxruntime verdict for this case
        return None
    return {o.name: np.asarray(r) for o, r in zip(model.graph.output, results)}


def run_all(device_kind: str = "npu") -> list[CaseResult]:
    return [run_case(case, device_kind) for case in kernel_cases()]

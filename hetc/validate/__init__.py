"""hetc.validate: the reference runs (onnxruntime float32, the model widened to float64) and the verdict on the
simulated outputs (the rule: hetc.validate.compare, docs/validation.md; for quantized models the integer rule of
hetc.validate.integer)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from hetc.validate.anchors import Probe, reanchor
from hetc.validate.compare import TOLERANCES, OutputComparison, Tolerance, ValidationReport, compare
from hetc.validate.inputs import InputSpec, check_inputs, check_npz_file, input_specs, load_inputs_npz, make_inputs
from hetc.validate.exact import ExactReference, exact_outputs, widen_model
from hetc.validate.integer import IntegerValidationReport, compare_quantized, is_quantized
from hetc.validate.reference import load_model, reference_outputs, seeded_random_node


def validate(model_path_or_proto: str | Path | onnx.ModelProto, actual: Mapping[str, np.ndarray],
             inputs: Mapping[str, np.ndarray], precision: str = "fp32", probe: Probe | None = None
             ) -> ValidationReport:
    """Run the original model in onnxruntime (float32) and widened to float64 on ``inputs``, and judge
    ``actual`` (the simulated outputs) by the rule of hetc.validate.compare; a quantized model instead by the
    integer rule of hetc.validate.integer (in quantisation steps, against hetc's lowered graph). ``probe``
    (names -> hetc's values of them, as the simulator's ``probes`` give) lets a float output that misses the rule
    be judged from hetc's own values at its cut nodes (hetc.validate.anchors); without it the verdict is the rule's."""
    model = load_model(model_path_or_proto)
    if is_quantized(model):   # judged in quantisation steps (hetc.validate.integer)
        return compare_quantized(model, actual, check_inputs(inputs, model, origin="reference inputs"), precision)
    expected = reference_outputs(model, inputs)
    exact = (exact_outputs(model, inputs, evaluator_only=seeded_random_node(model) is not None)
             if _has_float_output(expected) else None)
    if exact is None:
        report = compare(actual, expected, precision)
    else:
        report = compare(actual, expected, precision, exact.outputs, exact.source, exact.why)
    if probe is None or report.passed or seeded_random_node(model) is not None:
        return report
    outputs, anchors = reanchor(model, report.outputs, actual, inputs, report.tolerance, probe)
    return replace(report, outputs=outputs, anchors=anchors)


def _has_float_output(outputs: Mapping[str, object]) -> bool:
    """Whether any output (or sequence element) is a float tensor: only those need the float64 run."""
    def floats(value: object) -> bool:
        if isinstance(value, (list, tuple)):
            return any(floats(v) for v in value)
        return isinstance(value, np.ndarray) and value.dtype.kind == "f"
    return any(floats(v) for v in outputs.values())


__all__ = ["validate", "reference_outputs", "exact_outputs", "widen_model", "ExactReference", "compare", "make_inputs", "load_inputs_npz", "check_npz_file",
           "check_inputs", "input_specs", "InputSpec", "ValidationReport", "OutputComparison", "Tolerance",
           "TOLERANCES", "compare_quantized", "is_quantized", "IntegerValidationReport"]

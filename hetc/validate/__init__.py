"""hetc.validate: the onnxruntime reference run and the comparison of simulated outputs with it."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from hetc.validate.compare import TOLERANCES, OutputComparison, Tolerance, ValidationReport, compare
from hetc.validate.inputs import InputSpec, check_inputs, check_npz_file, input_specs, load_inputs_npz, make_inputs
from hetc.validate.reference import reference_outputs


def validate(model_path_or_proto: str | Path | onnx.ModelProto, actual: Mapping[str, np.ndarray],
             inputs: Mapping[str, np.ndarray], precision: str = "fp32") -> ValidationReport:
    """Run the original model in onnxruntime on ``inputs`` and compare ``actual`` (the simulated outputs)
    with it."""
    return compare(actual, reference_outputs(model_path_or_proto, inputs), precision)


__all__ = ["validate", "reference_outputs", "compare", "make_inputs", "load_inputs_npz", "check_npz_file",
           "check_inputs", "input_specs", "InputSpec", "ValidationReport", "OutputComparison", "Tolerance",
           "TOLERANCES"]

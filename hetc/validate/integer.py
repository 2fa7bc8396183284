"""The numerics rule for quantized (QDQ) models, in units of the output's quantisation step.

A quantized model is judged twice (docs/validation.md, "Quantized models"):

1. **End to end, exactly.** The reference is onnxruntime running hetc's own lowered graph (the model after
   hetc's passes, hetc.passes.qdq: the same integer ops, constants and zero points): every integer output must
   equal it element for element; a float output after a final DequantizeLinear must be within half a step of
   it (the same integer). Any scheduling, memory, transfer or kernel defect moves whole steps.
2. **The lowering, one step per group.** Each QDQ group the lowering rewrote (DQ -> float op -> Q became one
   integer op) is evaluated the way onnxruntime evaluates the QDQ model literally (graph optimisations off:
   dequantise, compute in float, quantise) on the *same* integer inputs reference 1 computed, and compared
   with reference 1's integers: at most one step per element, and at most ``MAX_OFF_BY_ONE`` (0.1%) of a
   tensor's elements off by one (two elements whatever its size). An integer op rounds once where the literal evaluation rounds the float sum, so a
   value within float noise of a rounding tie may land one step away; more than that, or many such elements,
   is a wrong zero point, scale, bias or clamp. Group by group, because one step in an early layer legitimately
   grows through the layers after it (the model outputs of QDQ MobileNetV2 differ from onnxruntime's literal
   evaluation by dozens of steps while every group is within one).

The report counts the elements off by one per tensor and in total.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.validate.compare import TOLERANCES, OutputComparison, ValidationReport

# The share of a tensor's elements that may be one step off in the lowering check (at least MIN_OFF_BY_ONE of
# them): honest lowerings measure at most 0.001% on ResNet-50 and 1 element of 384 on the unit tests' small
# tensors; one channel's weight scale 0.2% off makes 0.33% of a MobileNetV2 layer one step off (docs/validation.md).
MAX_OFF_BY_ONE = 0.001
MIN_OFF_BY_ONE = 2
_GIVEN = "__given"


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the model's main graph quantizes anything (a QuantizeLinear): the integer rule applies."""
    return any(n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx") for n in model.graph.node)


@dataclass(frozen=True)
class StepCheck:
    """One tensor compared in quantisation steps: the largest difference, how many elements are off by one
    step and by more, out of ``size``."""

    name: str
    max_steps: float
    off_by_one: int
    beyond_one: int
    size: int

    @property
    def passed(self) -> bool:
        return self.beyond_one == 0 and self.off_by_one <= max(MIN_OFF_BY_ONE, MAX_OFF_BY_ONE * self.size)


@dataclass(frozen=True)
class IntegerValidationReport(ValidationReport):
    """A ValidationReport whose rule is the integer rule; ``lowering`` holds the per-group checks."""

    lowering: tuple[StepCheck, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs) and all(c.passed for c in self.lowering)

    @property
    def reference(self) -> str:
        return ("onnxruntime running hetc's lowered integer graph; the lowering against onnxruntime's literal "
                "QDQ evaluation, group by group")

    def rule(self) -> str:
        return (f"integer outputs exact, float outputs after DequantizeLinear within half a step; every lowered "
                f"group within one step of the literal QDQ evaluation, at most {MAX_OFF_BY_ONE:.1%} of its "
                f"elements (or {MIN_OFF_BY_ONE}) off by one")

    def summary(self) -> dict[str, Any]:
        groups_off = sum(c.off_by_one for c in self.lowering)
        return {**super().summary(), "rule": "integer", "lowered_groups": len(self.lowering),
                "groups_failed": sum(not c.passed for c in self.lowering), "elements_off_by_one": groups_off,
                "max_group_steps": max((c.max_steps for c in self.lowering), default=0.0)}

    @property
    def headline(self) -> str:
        """The lowering check in one line (the build's validate stage prints it)."""
        passed = sum(c.passed for c in self.lowering)
        off, size = sum(c.off_by_one for c in self.lowering), sum(c.size for c in self.lowering)
        return (f"lowering: {passed}/{len(self.lowering)} groups within one step; {off} of {size} elements off "
                f"by one step ({off / max(size, 1):.3%})")

    def __str__(self) -> str:
        failed = [c for c in self.lowering if not c.passed]
        lines = [super().__str__(), self.headline]
        lines += [f"  FAIL {c.name}: max {c.max_steps:g} steps, {c.off_by_one} off by one, {c.beyond_one} beyond"
                  for c in failed[:10]]
        return "\n".join(lines)


def lowered_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as hetc's passes leave it (the QDQ groups lowered to integer ops), as ONNX."""
    from hetc.frontend import import_model
    from hetc.ir import EXPORT_IR_VERSION, to_onnx
    from hetc.passes import optimize

    lowered = to_onnx(optimize(import_model(model)))
    lowered.ir_version = EXPORT_IR_VERSION
    return lowered


def _session(model: onnx.ModelProto, literal: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if literal:   # each DequantizeLinear, float op and QuantizeLinear runs as written
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _quantized_tensors(model: onnx.ModelProto) -> list[str]:
    return [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx")]


def integer_reference(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(outputs, integers): onnxruntime's run of hetc's lowered graph, and the integers it computed for every
    tensor the original model quantizes (the lowered ops write them under the same names)."""
    lowered = lowered_model(model)
    produced = {o for n in lowered.graph.node for o in n.output}
    outputs = [o.name for o in lowered.graph.output]
    wanted = [t for t in _quantized_tensors(model) if t in produced and t not in outputs]
    lowered.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in wanted)
    results = _session(lowered, literal=True).run(None, dict(inputs))
    named = dict(zip(outputs + wanted, results))
    return {n: named[n] for n in outputs}, {t: named[t] for t in _quantized_tensors(model) if t in named}


def lowering_checks(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                    integers: Mapping[str, np.ndarray]) -> list[StepCheck]:
    """Every quantized tensor recomputed by onnxruntime's literal QDQ evaluation from the integers of
    ``integers`` (each QuantizeLinear's consumers read the given integers instead of the computed ones), compared
    with ``integers`` in steps."""
    given = onnx.ModelProto()
    given.CopyFrom(model)
    graph = given.graph
    names = [t for t in _quantized_tensors(model) if t in integers]
    for node in graph.node:
        if node.op_type != "QuantizeLinear":
            node.input[:] = [f"{n}{_GIVEN}" if n in integers else n for n in node.input]
    graph.input.extend(helper.make_tensor_value_info(f"{t}{_GIVEN}", helper.np_dtype_to_tensor_dtype(
        integers[t].dtype), integers[t].shape) for t in names)
    outputs = {o.name for o in graph.output}
    graph.output.extend(helper.make_empty_tensor_value_info(t) for t in names if t not in outputs)
    feeds = dict(inputs) | {f"{t}{_GIVEN}": integers[t] for t in names}
    session = _session(given, literal=True)
    results = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    return [_steps(t, integers[t].astype(np.int64), results[t].astype(np.int64), 1.0) for t in names]


def _steps(name: str, actual: np.ndarray, expected: np.ndarray, step: float) -> StepCheck:
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64)) / step
    diff = np.where(np.isnan(diff), np.inf, diff)
    rounded = np.round(diff)
    return StepCheck(name, float(diff.max(initial=0.0)), int(np.count_nonzero(rounded == 1)),
                     int(np.count_nonzero(rounded > 1)), int(diff.size))


def _output_steps(model: onnx.ModelProto) -> dict[str, float]:
    """Each graph output written by a DequantizeLinear: its (per-tensor) scale, the size of one step."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    steps = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[1] in consts and consts[node.input[1]].size == 1:
            steps[node.output[0]] = float(consts[node.input[1]].reshape(-1)[0])
    return {o.name: steps[o.name] for o in model.graph.output if o.name in steps}


def compare_quantized(model: onnx.ModelProto, actual: Mapping[str, np.ndarray],
                      inputs: Mapping[str, np.ndarray], precision: str = "fp32") -> IntegerValidationReport:
    """The integer rule (module doc) for hetc's outputs ``actual`` of quantized ``model`` on ``inputs``."""
    expected, integers = integer_reference(model, inputs)
    scales = _output_steps(model)
    rows = []
    for name, reference in expected.items():
        got = actual.get(name)
        if got is None or np.shape(got) != np.shape(reference):
            rows.append(OutputComparison(name, tuple(np.shape(reference)), str(reference.dtype), _INF, _INF, 0.0,
                                         False, "missing" if got is None else f"shape {np.shape(got)}"))
            continue
        integer = reference.dtype.kind in "iub"
        check = _steps(name, np.asarray(got), reference, 1.0 if integer else scales.get(name, 0.0) or 1.0)
        ok = check.max_steps == 0 if integer else check.max_steps < 0.5
        unit = "" if integer else f" of {scales.get(name, 1.0):.4g}"
        note = "exact" if check.max_steps == 0 else f"{check.max_steps:.3g} steps{unit} off at " \
                                                    f"{check.off_by_one + check.beyond_one} elements"
        abs_err = float(np.abs(np.asarray(got, np.float64) - reference.astype(np.float64)).max(initial=0.0))
        rows.append(OutputComparison(name, tuple(reference.shape), str(reference.dtype), abs_err,
                                     abs_err / max(float(np.abs(reference).max(initial=0.0)), 1e-30), 1.0, ok,
                                     note, hetc_err=check.max_steps))
    checks = tuple(lowering_checks(model, inputs, integers))
    return IntegerValidationReport(tuple(rows), precision, TOLERANCES.get(precision, TOLERANCES["fp32"]), None,
                                   "a quantized model is judged in quantisation steps", lowering=checks)


_INF = float("inf")

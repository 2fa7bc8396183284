"""Comparison of simulated outputs with the references, and the ValidationReport it produces.

The rule (docs/validation.md). Three runs of each output are compared: hetc's (``actual``), onnxruntime's in
float32 (``expected``) and the model widened to float64 (``exact``, hetc.validate.exact). With ``S`` the
output's scale (max |exact| over finite elements),

    hetc error  e_h = max |actual - exact| / S        onnxruntime error  e_o = max |expected - exact| / S
    ratio = e_h / max(e_o, eps)                        pass  <=>  ratio <= multiple

where ``eps`` is the machine epsilon of the datapath (float32 2^-23, float16 2^-10): onnxruntime's error
counts as at least one unit in the last place of the output's scale, so exact agreement divides by nothing.
The scale cancels from the ratio except through that floor, so the rule does not depend on the output's
magnitude (logits of 1e4 and probabilities alike) nor on the model's conditioning (an ill-conditioned model
lets onnxruntime err too). ``multiple`` is 16 (the margin measured in docs/validation.md).

When no float64 reference exists (neither runtime can run the widened model) float outputs fall back to the
fixed tolerance ``|actual - expected| <= atol + rtol * |expected|`` against onnxruntime, as before:
- ``fp32``: rtol 1e-4, atol 1e-5.
- ``fp16``: rtol 1e-2 and atol 1e-2 x max|expected|. An fp16 datapath rounds every intermediate tensor to 11
  significant bits, so the error of an element follows the magnitude of the activations it was computed from.
At fp16 the cosine similarity must also be >= 0.999 whichever rule applies (measured on the zoo models:
above 0.99998).
Integer and bool outputs must match onnxruntime exactly at every precision. NaNs must sit at the same positions.
Host values (hetc.ir.host): string tensors match exactly, sequences element by element (same length), optionals
by presence first (None is empty), then by value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from hetc.ir import describe_host_value


@dataclass(frozen=True)
class Tolerance:
    rtol: float                            # the fixed tolerance, used without a float64 reference
    atol: float
    atol_relative_to_range: bool = False   # atol is multiplied by max|expected|
    min_cosine: float | None = None
    multiple: float = 16.0                 # hetc's error may be this many times onnxruntime's ...
    eps: float = float(np.finfo(np.float32).eps)   # ... which counts as at least this fraction of the scale

    def absolute(self, expected: np.ndarray) -> float:
        if not self.atol_relative_to_range:
            return self.atol
        finite = np.abs(expected[np.isfinite(expected)])
        return self.atol * max(1.0, float(finite.max()) if finite.size else 1.0)

    def describe_fixed(self) -> str:
        atol = f"{self.atol:g}" + (" x max|expected|" if self.atol_relative_to_range else "")
        return f"|actual - expected| <= {atol} + {self.rtol:g} x |expected|"

    def describe_ratio(self) -> str:
        return (f"hetc error <= {self.multiple:g} x max(onnxruntime error, {self.eps:.3g}), errors against the "
                f"float64 reference as a fraction of max|reference|")

    def describe(self, exact_source: str | None = "") -> str:
        """The rule in force: the ratio rule when a float64 reference exists (``exact_source``), else the
        fixed tolerance; an empty ``exact_source`` describes both."""
        cosine = f", cosine >= {self.min_cosine:g}" if self.min_cosine is not None else ""
        if exact_source is None:
            return self.describe_fixed() + cosine
        if exact_source:
            return self.describe_ratio() + cosine
        return f"{self.describe_ratio()}; without one, {self.describe_fixed()}{cosine}"


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-4, atol=1e-5),
    "fp16": Tolerance(rtol=1e-2, atol=1e-2, atol_relative_to_range=True, min_cosine=0.999,
                      eps=float(np.finfo(np.float16).eps)),
}


@dataclass(frozen=True)
class OutputComparison:
    """How one output compares. ``max_abs_err`` and ``max_rel_err`` are against onnxruntime's float32 run;
    ``max_rel_err`` divides each error by ``max(|expected|, atol)`` (atol as scaled for the precision) so that
    elements near zero do not report meaningless ratios. ``hetc_err``, ``ort_err`` and ``ratio`` are the
    figures of the ratio rule (module doc); None when the output was not judged by it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs_err: float
    max_rel_err: float
    cosine: float
    passed: bool
    note: str = ""
    hetc_err: float | None = None
    ort_err: float | None = None
    ratio: float | None = None


@dataclass(frozen=True)
class ValidationReport:
    outputs: tuple[OutputComparison, ...]
    precision: str
    tolerance: Tolerance
    exact_source: str | None = None   # who computed the float64 reference; None: there is none
    exact_why: str = ""               # why there is none
    # The checks at the cut nodes that judged the outputs missing the rule end to end (hetc.validate.anchors).
    anchors: tuple[OutputComparison, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def max_abs_err(self) -> float:
        return max((o.max_abs_err for o in self.outputs), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max((o.max_rel_err for o in self.outputs), default=0.0)

    @property
    def max_ratio(self) -> float | None:
        ratios = [o.ratio for o in self.outputs if o.ratio is not None]
        return max(ratios) if ratios else None

    @property
    def reference(self) -> str:
        """The references used, in words."""
        if self.exact_source:
            return f"onnxruntime float32 and {self.exact_source}"
        return "onnxruntime float32 only" + (f" (no float64 reference: {self.exact_why})" if self.exact_why else "")

    def rule(self) -> str:
        return self.tolerance.describe(self.exact_source)

    def summary(self) -> dict[str, Any]:
        """The ``validation`` object of ``hetc build --json`` (errors are null when an output is missing or
        misshapen: strict JSON has no infinity)."""
        ratio = self.max_ratio
        return {"passed": self.passed, "max_abs_err": _finite(self.max_abs_err),
                "max_rel_err": _finite(self.max_rel_err), "max_ratio": None if ratio is None else _finite(ratio),
                "reference": self.exact_source or "onnxruntime float32"}

    def to_dict(self) -> dict[str, Any]:
        outputs = [{k: _finite(v) if isinstance(v, float) else v for k, v in asdict(o).items()}
                   for o in self.outputs]
        anchors = [{k: _finite(v) if isinstance(v, float) else v for k, v in asdict(o).items()}
                   for o in self.anchors]
        return {**self.summary(), "precision": self.precision, "rule": self.rule(),
                "tolerance": asdict(self.tolerance), "exact_why": self.exact_why, "outputs": outputs,
                "anchors": anchors}

    def __str__(self) -> str:
        lines = self._table("output", self.outputs)
        verdict = "PASSED" if self.passed else "FAILED"
        passed = sum(o.passed for o in self.outputs)
        lines.append(f"{verdict}: {passed}/{len(self.outputs)} outputs within {self.precision} tolerance "
                     f"({self.rule()})")
        lines.append(f"reference: {self.reference}")
        if self.anchors:
            # Every failing check, else the closest calls: a quantized model has a hundred or more.
            shown = [a for a in self.anchors if not a.passed] or sorted(
                self.anchors, key=lambda a: a.ratio if a.ratio is not None else a.max_rel_err, reverse=True
            )[:_ANCHORS_SHOWN]
            lines.append(f"cut checks (from hetc's own values at the cut nodes, docs/validation.md): "
                         f"{sum(a.passed for a in self.anchors)}/{len(self.anchors)} pass")
            lines.extend(self._table("value", tuple(shown)))
            if len(shown) < len(self.anchors):
                lines.append(f"... and {len(self.anchors) - len(shown)} more (--json lists every check)")
        return "\n".join(lines)

    @staticmethod
    def _table(first: str, comparisons: tuple[OutputComparison, ...]) -> list[str]:
        header = (first, "shape", "dtype", "max abs err", "hetc err", "ort err", "ratio", "cosine", "result")
        rows = [header]
        for o in comparisons:
            shape = "x".join(map(str, o.shape)) or "scalar"
            result = ("pass" if o.passed else "FAIL") + (f" ({o.note})" if o.note else "")
            rows.append((o.name, shape, o.dtype, f"{o.max_abs_err:.3e}", fmt_optional(o.hetc_err),
                         fmt_optional(o.ort_err), fmt_optional(o.ratio, ".3g"), f"{o.cosine:.6f}", result))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return lines


def fmt_optional(value: float | None, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a.ravel(), b.ravel()) / norm)


def _add_note(note: str, more: str) -> str:
    return (note + "; " if note else "") + more


def compare_one(name: str, actual: np.ndarray | None, expected: np.ndarray, tolerance: Tolerance,
                exact: np.ndarray | None = None) -> OutputComparison:
    """One tensor output: exactly for integers, bools and strings; for floats by the ratio rule when
    ``exact`` (the float64 reference, same shape) is given, else by the fixed tolerance."""
    expected = np.asarray(expected)
    shape, dtype = tuple(expected.shape), str(expected.dtype)
    if actual is None:
        return OutputComparison(name, shape, dtype, _INF, _INF, 0.0, False, "missing")
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return OutputComparison(name, shape, dtype, _INF, _INF, 0.0, False,
                                f"shape {'x'.join(map(str, actual.shape))}")
    note = "" if actual.dtype == expected.dtype else f"dtype {actual.dtype}"
    if expected.dtype.kind in "biu" or expected.dtype == np.dtype(object):
        return _compare_exactly(name, actual, expected, note)
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    same_special = (nan_a & nan_e) | (np.isinf(e64) & (a64 == e64))
    if np.any(nan_a != nan_e):
        note = _add_note(note, "NaN mismatch")
    atol = tolerance.absolute(e64)
    with np.errstate(invalid="ignore"):
        abs_err = np.where(same_special, 0.0, np.abs(a64 - e64))
        abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
        within = abs_err <= atol + tolerance.rtol * np.abs(np.where(same_special, 0.0, e64))
        rel_err = abs_err / np.maximum(np.abs(np.where(same_special, 1.0, e64)), atol)
    finite = ~(nan_a | nan_e | np.isinf(a64) | np.isinf(e64))
    cosine = _cosine(a64[finite], e64[finite])
    hetc_err = ort_err = ratio = None
    if exact is not None and np.shape(exact) == shape:
        hetc_err, ort_err, ratio = ratio_rule(a64, e64, np.asarray(exact, np.float64), same_special, tolerance)
        passed = ratio <= tolerance.multiple and not note
    else:
        passed = bool(np.all(within)) and not note
    if tolerance.min_cosine is not None and cosine < tolerance.min_cosine:
        passed = False
        note = _add_note(note, f"cosine < {tolerance.min_cosine:g}")
    return OutputComparison(name, shape, dtype, float(abs_err.max(initial=0.0)), float(rel_err.max(initial=0.0)),
                            cosine, passed, note, hetc_err, ort_err, ratio)


def ratio_rule(actual: np.ndarray, expected: np.ndarray, exact: np.ndarray, same_special: np.ndarray,
               tolerance: Tolerance) -> tuple[float, float, float]:
    """(hetc error, onnxruntime error, ratio) of the module doc, over the elements where all three runs are
    finite; an element where hetc and onnxruntime agree on a NaN or an infinity counts as no error for hetc, one
    where hetc alone is not finite as an infinite error."""
    usable = np.isfinite(actual) & np.isfinite(expected) & np.isfinite(exact)
    scale = float(np.abs(exact[usable]).max(initial=0.0))
    if scale == 0.0:   # an all-zero reference: measure against whichever run is not zero, else one
        scale = float(np.abs(expected[usable]).max(initial=0.0)) or 1.0
    hetc = np.abs(actual[usable] - exact[usable]).max(initial=0.0) / scale
    if np.any(~np.isfinite(actual) & np.isfinite(expected) & ~same_special):
        hetc = _INF   # hetc produced a NaN or an infinity where onnxruntime did not
    ort = np.abs(expected[usable] - exact[usable]).max(initial=0.0) / scale
    return float(hetc), float(ort), float(hetc / max(ort, tolerance.eps))


def _compare_exactly(name: str, actual: np.ndarray, expected: np.ndarray, note: str) -> OutputComparison:
    equal = actual == expected
    is_object = expected.dtype == np.dtype(object)
    a64 = equal.astype(np.float64) if is_object else actual.astype(np.float64)
    e64 = np.ones_like(a64) if is_object else expected.astype(np.float64)
    abs_err = np.abs(a64 - e64)
    passed = bool(np.all(equal)) and not note
    return OutputComparison(name, tuple(expected.shape), str(expected.dtype), float(abs_err.max(initial=0.0)),
                            float((abs_err / np.maximum(np.abs(e64), 1.0)).max(initial=0.0)),
                            _cosine(a64, e64), passed, note)


def compare(actual: Mapping[str, Any], expected: Mapping[str, Any], precision: str = "fp32",
            exact: Mapping[str, Any] | None = None, exact_source: str | None = None,
            exact_why: str = "") -> ValidationReport:
    """Compare every expected output (by name) with the actual one at ``precision``: by the ratio rule
    where ``exact`` (the float64 reference of hetc.validate.exact, computed by ``exact_source``) has the
    output, else by the fixed tolerance."""
    from hetc.errors import ValidationError

    if precision not in TOLERANCES:
        raise ValidationError(f"unknown precision '{precision}'; choose one of {', '.join(TOLERANCES)}")
    tolerance = TOLERANCES[precision]
    exact = exact or {}
    rows = tuple(compare_value(name, actual[name] if name in actual else _MISSING, value, tolerance,
                               exact.get(name)) for name, value in expected.items())
    return ValidationReport(rows, precision, tolerance, exact_source if exact else None, exact_why)


_MISSING = object()
_ANCHORS_SHOWN = 8
_INF = float("inf")


def compare_value(name: str, actual: Any, expected: Any, tolerance: Tolerance, exact: Any = None
                  ) -> OutputComparison:
    """``compare_one``, extended to host values (hetc.ir.host): a sequence (list) element by element, an
    optional by presence (None: empty) and then value; string tensors exactly (as ``compare_one`` does)."""
    if actual is _MISSING:
        return compare_one(name, None, expected if isinstance(expected, np.ndarray) else np.zeros(0), tolerance)
    if isinstance(expected, (list, tuple)):
        return _compare_sequence(name, actual, list(expected), tolerance, exact)
    if expected is None:   # an empty optional
        ok = actual is None
        return OutputComparison(name, (), "optional", 0.0 if ok else _INF, 0.0 if ok else _INF, 1.0 if ok else 0.0,
                                ok, "empty optional" if ok else f"expected an empty optional, got "
                                                                f"{describe_host_value(actual)}")
    if actual is None or isinstance(actual, (list, tuple)):
        expected = np.asarray(expected)
        return OutputComparison(name, tuple(expected.shape), str(expected.dtype), _INF, _INF, 0.0, False,
                                f"got {describe_host_value(actual)}")
    return compare_one(name, actual, expected, tolerance, exact if isinstance(exact, np.ndarray) else None)


def _compare_sequence(name: str, actual: Any, expected: list, tolerance: Tolerance, exact: Any = None
                      ) -> OutputComparison:
    dtype = "seq(" + (str(np.asarray(expected[0]).dtype) if expected else "?") + ")"
    if not isinstance(actual, (list, tuple)):
        return OutputComparison(name, (len(expected),), dtype, _INF, _INF, 0.0, False,
                                f"expected a sequence, got {describe_host_value(actual)}")
    if len(actual) != len(expected):
        return OutputComparison(name, (len(expected),), dtype, _INF, _INF, 0.0, False,
                                f"length {len(actual)}, expected {len(expected)}")
    exact_items = list(exact) if isinstance(exact, (list, tuple)) and len(exact) == len(expected) else \
        [None] * len(expected)
    rows = [compare_value(f"{name}[{i}]", a, e, tolerance, x)
            for i, (a, e, x) in enumerate(zip(actual, expected, exact_items))]
    failed = [r for r in rows if not r.passed]
    note = f"{len(failed)} of {len(rows)} elements differ, first {failed[0].name}" + (
        f" ({failed[0].note})" if failed[0].note else "") if failed else ""
    judged = [r for r in rows if r.ratio is not None]
    worst = max(judged, key=lambda r: r.ratio) if judged else None
    return OutputComparison(name, (len(expected),), dtype, max((r.max_abs_err for r in rows), default=0.0),
                            max((r.max_rel_err for r in rows), default=0.0),
                            min((r.cosine for r in rows), default=1.0), not failed, note,
                            worst and worst.hetc_err, worst and worst.ort_err, worst and worst.ratio)

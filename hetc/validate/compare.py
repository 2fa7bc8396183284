"""Comparison of simulated outputs with the reference, and the ValidationReport it produces.

Tolerances per precision (an element passes when ``|actual - expected| <= atol + rtol * |expected|``):
- ``fp32``: rtol 1e-4, atol 1e-5: float32 kernels that accumulate differently from onnxruntime stay orders of
  magnitude inside this.
- ``fp16``: rtol 1e-2 and atol 1e-2 x max|expected|, plus cosine similarity >= 0.999. An fp16 datapath rounds
  every intermediate tensor to 11 significant bits, so the error of an element follows the magnitude of the
  activations it was computed from (hence an atol scaled by the output's range) rather than its own value;
  measured on the zoo models (MobileNetV2, U-Net, GPT decoder) the error stays below 0.6% of the output
  range with cosine above 0.99998.
Integer and bool outputs must match exactly at every precision. NaNs must sit at the same positions.
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
    rtol: float
    atol: float
    atol_relative_to_range: bool = False  # atol is multiplied by max|expected|
    min_cosine: float | None = None

    def absolute(self, expected: np.ndarray) -> float:
        if not self.atol_relative_to_range:
            return self.atol
        finite = np.abs(expected[np.isfinite(expected)])
        return self.atol * max(1.0, float(finite.max()) if finite.size else 1.0)

    def describe(self) -> str:
        atol = f"{self.atol:g}" + (" x max|expected|" if self.atol_relative_to_range else "")
        cosine = f", cosine >= {self.min_cosine:g}" if self.min_cosine is not None else ""
        return f"|actual - expected| <= {atol} + {self.rtol:g} x |expected|{cosine}"


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-4, atol=1e-5),
    "fp16": Tolerance(rtol=1e-2, atol=1e-2, atol_relative_to_range=True, min_cosine=0.999),
}


@dataclass(frozen=True)
class OutputComparison:
    """How one output compares. ``max_rel_err`` divides each error by ``max(|expected|, atol)`` (atol as
    scaled for the precision) so that elements near zero do not report meaningless ratios."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs_err: float
    max_rel_err: float
    cosine: float
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class ValidationReport:
    outputs: tuple[OutputComparison, ...]
    precision: str
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def max_abs_err(self) -> float:
        return max((o.max_abs_err for o in self.outputs), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max((o.max_rel_err for o in self.outputs), default=0.0)

    def summary(self) -> dict[str, Any]:
        """The ``validation`` object of ``hetc build --json`` (errors are null when an output is missing or
        misshapen: strict JSON has no infinity)."""
        return {"passed": self.passed, "max_abs_err": _finite(self.max_abs_err),
                "max_rel_err": _finite(self.max_rel_err)}

    def to_dict(self) -> dict[str, Any]:
        outputs = [{k: _finite(v) if isinstance(v, float) else v for k, v in asdict(o).items()}
                   for o in self.outputs]
        return {**self.summary(), "precision": self.precision, "tolerance": asdict(self.tolerance),
                "outputs": outputs}

    def __str__(self) -> str:
        header = ("output", "shape", "dtype", "max abs err", "max rel err", "cosine", "result")
        rows = [header]
        for o in self.outputs:
            shape = "x".join(map(str, o.shape)) or "scalar"
            result = ("pass" if o.passed else "FAIL") + (f" ({o.note})" if o.note else "")
            rows.append((o.name, shape, o.dtype, f"{o.max_abs_err:.3e}", f"{o.max_rel_err:.3e}",
                         f"{o.cosine:.6f}", result))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        verdict = "PASSED" if self.passed else "FAILED"
        passed = sum(o.passed for o in self.outputs)
        lines.append(f"{verdict}: {passed}/{len(self.outputs)} outputs within {self.precision} tolerance "
                     f"({self.tolerance.describe()})")
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a.ravel(), b.ravel()) / norm)


def compare_one(name: str, actual: np.ndarray | None, expected: np.ndarray, tolerance: Tolerance
                ) -> OutputComparison:
    expected = np.asarray(expected)
    shape, dtype = tuple(expected.shape), str(expected.dtype)
    if actual is None:
        return OutputComparison(name, shape, dtype, float("inf"), float("inf"), 0.0, False, "missing")
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return OutputComparison(name, shape, dtype, float("inf"), float("inf"), 0.0, False,
                                f"shape {'x'.join(map(str, actual.shape))}")
    note = "" if actual.dtype == expected.dtype else f"dtype {actual.dtype}"
    exact = expected.dtype.kind in "biu" or expected.dtype == np.dtype(object)
    if exact:
        equal = actual == expected
        a64 = actual.astype(np.float64) if expected.dtype != np.dtype(object) else equal.astype(np.float64)
        e64 = expected.astype(np.float64) if expected.dtype != np.dtype(object) else np.ones_like(a64)
        abs_err = np.abs(a64 - e64)
        passed = bool(np.all(equal)) and not note
        return OutputComparison(name, shape, dtype, float(abs_err.max(initial=0.0)),
                                float((abs_err / np.maximum(np.abs(e64), 1.0)).max(initial=0.0)),
                                _cosine(a64, e64), passed, note)
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    same_special = (nan_a & nan_e) | (np.isinf(e64) & (a64 == e64))
    if np.any(nan_a != nan_e):
        note = (note + "; " if note else "") + "NaN mismatch"
    atol = tolerance.absolute(e64)
    with np.errstate(invalid="ignore"):
        abs_err = np.where(same_special, 0.0, np.abs(a64 - e64))
        abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
        within = abs_err <= atol + tolerance.rtol * np.abs(np.where(same_special, 0.0, e64))
        rel_err = abs_err / np.maximum(np.abs(np.where(same_special, 1.0, e64)), atol)
    finite = ~(nan_a | nan_e | np.isinf(a64) | np.isinf(e64))
    cosine = _cosine(a64[finite], e64[finite])
    passed = bool(np.all(within)) and not note
    if tolerance.min_cosine is not None and cosine < tolerance.min_cosine:
        passed = False
        note = (note + "; " if note else "") + f"cosine < {tolerance.min_cosine:g}"
    return OutputComparison(name, shape, dtype, float(abs_err.max(initial=0.0)), float(rel_err.max(initial=0.0)),
                            cosine, passed, note)


def compare(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], precision: str = "fp32"
            ) -> ValidationReport:
    """Compare every expected output (by name) with the actual one at the tolerance of ``precision``."""
    from hetc.errors import ValidationError

    if precision not in TOLERANCES:
        raise ValidationError(f"unknown precision '{precision}'; choose one of {', '.join(TOLERANCES)}")
    tolerance = TOLERANCES[precision]
    rows = tuple(compare_value(name, actual[name] if name in actual else _MISSING, value, tolerance)
                 for name, value in expected.items())
    return ValidationReport(rows, precision, tolerance)


_MISSING = object()
_INF = float("inf")


def compare_value(name: str, actual: Any, expected: Any, tolerance: Tolerance) -> OutputComparison:
    """``compare_one``, extended to host values (hetc.ir.host): a sequence (list) element by element, an
    optional by presence (None: empty) and then value; string tensors exactly (as ``compare_one`` does)."""
    if actual is _MISSING:
        return compare_one(name, None, expected if isinstance(expected, np.ndarray) else np.zeros(0), tolerance)
    if isinstance(expected, (list, tuple)):
        return _compare_sequence(name, actual, list(expected), tolerance)
    if expected is None:   # an empty optional
        ok = actual is None
        return OutputComparison(name, (), "optional", 0.0 if ok else _INF, 0.0 if ok else _INF, 1.0 if ok else 0.0,
                                ok, "empty optional" if ok else f"expected an empty optional, got "
                                                                f"{describe_host_value(actual)}")
    if actual is None or isinstance(actual, (list, tuple)):
        expected = np.asarray(expected)
        return OutputComparison(name, tuple(expected.shape), str(expected.dtype), _INF, _INF, 0.0, False,
                                f"got {describe_host_value(actual)}")
    return compare_one(name, actual, expected, tolerance)


def _compare_sequence(name: str, actual: Any, expected: list, tolerance: Tolerance) -> OutputComparison:
    dtype = "seq(" + (str(np.asarray(expected[0]).dtype) if expected else "?") + ")"
    if not isinstance(actual, (list, tuple)):
        return OutputComparison(name, (len(expected),), dtype, _INF, _INF, 0.0, False,
                                f"expected a sequence, got {describe_host_value(actual)}")
    if len(actual) != len(expected):
        return OutputComparison(name, (len(expected),), dtype, _INF, _INF, 0.0, False,
                                f"length {len(actual)}, expected {len(expected)}")
    rows = [compare_value(f"{name}[{i}]", a, e, tolerance) for i, (a, e) in enumerate(zip(actual, expected))]
    failed = [r for r in rows if not r.passed]
    note = f"{len(failed)} of {len(rows)} elements differ, first {failed[0].name}" + (
        f" ({failed[0].note})" if failed[0].note else "") if failed else ""
    return OutputComparison(name, (len(expected),), dtype, max((r.max_abs_err for r in rows), default=0.0),
                            max((r.max_rel_err for r in rows), default=0.0),
                            min((r.cosine for r in rows), default=1.0), not failed, note)

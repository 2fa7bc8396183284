"""The Python API that mirrors the CLI: ``compile``, ``simulate``, ``validate``, ``load_bundle``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hetc.codegen import Bundle, load_bundle
from hetc.codegen.bundle import check_output_dir
from hetc.errors import ValidationError
from hetc.frontend.loader import read_model_file
from hetc.ir import parse_host_type
from hetc.pipeline import BuildOptions, BuildResult, build, file_sha256
from hetc.sim import SimResult, simulate as _simulate
from hetc.stages import ProgressSink
from hetc.validate import ValidationReport, check_inputs, load_inputs_npz, make_inputs, validate as validate_outputs
from hetc.validate.weights import randomize_weights


def compile(model: str | Path, output: str | Path | None = None, *, force: bool = False,
            progress: ProgressSink | None = None, **options: Any) -> BuildResult:
    """Compile ``model`` (keyword options are the fields of ``BuildOptions``); write the bundle to ``output``
    when given (checked first, so that a long build does not end in a refusal)."""
    if output is not None:
        check_output_dir(output, force)
    result = build(model, BuildOptions(**options), progress=progress)
    if output is not None:
        result.save(output, force=force)
    return result


def as_bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def bundle_input_specs(bundle: Bundle) -> dict[str, tuple]:
    """``{name: (dtype, shape)}`` of the bundle's inputs; ``(dtype, shape, HostType)`` for a host value."""
    specs: dict[str, tuple] = {}
    for b in bundle.inputs:
        if b.get("host"):
            specs[b["name"]] = (b["dtype"], tuple(b["shape"] or ()), parse_host_type(b["host"]))
        else:
            specs[b["name"]] = (b["dtype"], tuple(b["shape"]))
    return specs


def bundle_inputs(bundle: Bundle, inputs: str | Path | Mapping[str, Any] | None,
                  seed: int = 0) -> dict[str, Any]:
    """Inputs for a bundle: an .npz path, a mapping (checked), or seeded random values. A host input (a
    sequence, an optional, a string tensor) is a Python object: a list of arrays, None or the element, an
    array of strings."""
    specs = bundle_input_specs(bundle)
    if inputs is None:
        return make_inputs(specs, seed=seed)
    if isinstance(inputs, (str, Path)):
        return load_inputs_npz(inputs, specs)
    return check_inputs(inputs, specs)


def simulate(bundle: Bundle | str | Path, inputs: str | Path | Mapping[str, Any] | None = None, *,
             functional: bool = True, precision: str = "fp32", seed: int = 0,
             contention: bool = True) -> SimResult:
    """Run a bundle (object or directory) in the simulator."""
    b = as_bundle(bundle)
    return _simulate(b, bundle_inputs(b, inputs, seed) if functional else None, functional=functional,
                     precision=precision, contention=contention)


@dataclass(frozen=True)
class BundleValidation:
    sim: SimResult
    report: ValidationReport
    inputs: dict[str, np.ndarray]


def validate_bundle(bundle: Bundle | str | Path, model: str | Path, inputs: Any = None, *, seed: int = 0,
                    precision: str = "fp32") -> BundleValidation:
    """Simulate a bundle functionally and compare its outputs with onnxruntime running ``model``."""
    b = as_bundle(bundle)
    model = Path(model)
    recorded = b.manifest.get("model", {}).get("sha256")
    if recorded and model.is_file() and file_sha256(model) != recorded:
        raise ValidationError(f"{model} is not the model this bundle was built from (sha256 differs from "
                              f"{recorded[:12]}...); pass the original model with --model")
    weights_seed = b.manifest.get("model", {}).get("random_weights_seed")
    # A bundle built with random weights is checked against the model with the same weights.
    reference = model if weights_seed is None else randomize_weights(read_model_file(model), weights_seed)
    values = bundle_inputs(b, inputs, seed)
    sim = _simulate(b, values, functional=True, precision=precision)
    report = validate_outputs(reference, sim.outputs or {}, values, precision, probe=lambda names: _simulate(
        b, values, functional=True, precision=precision, probes=names).probes)
    return BundleValidation(sim=sim, report=report, inputs=values)


def validate(model: str | Path, inputs: Any = None, *, seed: int = 0, progress: ProgressSink | None = None,
             **options: Any) -> BuildResult:
    """Compile ``model`` in memory, simulate it functionally and compare with onnxruntime.
    ``result.validation`` holds the ValidationReport."""
    return build(model, BuildOptions(validate=True, inputs=inputs, input_seed=seed, **options), progress=progress)


__all__ = ["compile", "simulate", "validate", "validate_bundle", "load_bundle", "BuildResult", "BuildOptions"]

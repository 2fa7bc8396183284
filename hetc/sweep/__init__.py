"""Design-space exploration: ``hetc sweep SPEC.toml -o DIR`` runs compile-and-simulate points on Ray.

spec (the TOML spec and its grid) <- derive (a point's target, through the normal loader) <- point (one
build and timing simulation -> one row) <- runner (Ray or serial, resume) <- results (tables, Pareto front,
plots, HTML) and search (Ray Tune + Optuna over continuous axes). Ray is an optional extra
(``pip install 'hetc[sweep]'``), imported only when a sweep runs.
"""
from hetc.sweep.derive import derive_target
from hetc.sweep.results import finish, pareto_front
from hetc.sweep.runner import load_rows, require_ray, run_sweep
from hetc.sweep.spec import Point, Range, SpecError, SweepSpec, load_spec, parse_spec

__all__ = ["SweepSpec", "Point", "Range", "SpecError", "load_spec", "parse_spec", "derive_target", "run_sweep",
           "require_ray", "load_rows", "pareto_front", "finish"]

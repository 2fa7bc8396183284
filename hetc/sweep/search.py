"""``hetc sweep --search optuna --trials N``: Ray Tune with Optuna's multi-objective sampler over the spec's
continuous ``[search]`` ranges, per model, minimising the simulated makespan against the area proxy (on-chip
SRAM bytes and peak compute, ``hetc.sweep.point.area_proxy``). The grid's ``[axes]`` that the search does not
range over stay at their first value. Every trial is a row like a grid point's, so the same table, front,
plots and report come out."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from hetc.errors import OptionError
from hetc.sweep.point import OK, run_point
from hetc.sweep.onray import init_ray
from hetc.sweep.runner import INSTALL_HINT, ROWS_FILE, Inputs, prepare_output, require_ray
from hetc.sweep.spec import Point, Range, SweepSpec

SEARCH_OBJECTIVES = ("makespan_sim_us", "sram_bytes", "peak_gops")
_FAILED_VALUE = 1e18   # a failed trial (no makespan) is the worst in every objective, not a missing value


def search_point(spec: SweepSpec, model: str, scheduler: str, config: dict[str, Any]) -> Point:
    """The point a trial's ``config`` (``p0``, ``p1``... in ``spec.search`` order) stands for."""
    fixed = {k: v[0] for k, v in spec.axes.items() if k not in spec.search}
    chosen = {key: _value(r, config[f"p{i}"]) for i, (key, r) in enumerate(spec.search.items())}
    return Point(model, scheduler, tuple({**fixed, **chosen}.items()), model in spec.validate)


def _value(r: Range, x: float) -> Any:
    return int(round(x)) if r.integer else float(x)


def run_search(spec: SweepSpec, out: Path, trials: int, *, address: str | None = None,
               num_cpus: int | None = None, resume: bool = False,
               progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """``trials`` trials per model and scheduler; returns their rows (and earlier ones when resuming)."""
    if not spec.search:
        raise OptionError(f"{spec.path} has no [search] table; add continuous ranges such as "
                          f'"devices.npu.peak.int8" = {{ min = 1024, max = 8192 }} or run the grid')
    if trials < 1:
        raise OptionError(f"--trials {trials} is not positive; ask for at least one trial")
    ray = require_ray()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # the classic reporter honours verbose=0: stdout stays ours
    try:
        import optuna
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise OptionError(f"--search optuna needs ray[tune] and optuna; {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = prepare_output(out, resume)
    inputs = Inputs.of(spec)
    init_ray(ray, address, num_cpus)
    space = {f"p{i}": optuna.distributions.FloatDistribution(r.low, r.high, log=r.log)
             for i, r in enumerate(spec.search.values())}
    jobs = [(m, s) for m in spec.models for s in spec.schedulers]
    shas = inputs.shas   # the closure carries the hashes only; bytes and texts come from the object store
    if progress is not None:
        progress({"event": "start", "total": trials * len(jobs), "skipped": 0})
    with open(out / ROWS_FILE, "a", encoding="utf-8") as sink:
        for model, scheduler in jobs:
            def trainable(config: dict[str, Any], model_bytes: bytes, base: str, files: dict[str, str],
                          model: str = model, scheduler: str = scheduler) -> None:
                point = search_point(spec, model, scheduler, config)
                key = Inputs({}, shas, base, files).key(point, spec)
                row = run_point(point, key, model_bytes, base, files, spec.time_limit_s, spec.seed)
                ok = row["status"] == OK
                tune.report({**{o: float(row[o]) if ok else _FAILED_VALUE for o in SEARCH_OBJECTIVES},
                             "row_json": json.dumps(row, default=str)})

            # tune.with_parameters ships the model bytes and target texts through the object store once
            fn = tune.with_resources(tune.with_parameters(trainable, model_bytes=inputs.models[model],
                                                          base=inputs.base, files=inputs.files), {"cpu": 1})
            searcher = OptunaSearch(space=space, metric=list(SEARCH_OBJECTIVES), mode=["min"] * 3, seed=spec.seed)
            tuner = tune.Tuner(fn, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials),
                               run_config=tune.RunConfig(name=f"{model}-{scheduler}", verbose=0,
                                                         storage_path=str((out / "tune").resolve())))
            for result in tuner.fit():
                raw = (result.metrics or {}).get("row_json")
                row = json.loads(raw) if raw else {"model": model, "scheduler": scheduler, "status": "failed",
                                                   "error": f"trial failed: {result.error}"}
                row["trial"] = True
                sink.write(json.dumps(row, default=str) + "\n")
                sink.flush()
                rows.append(row)
                if progress is not None:
                    progress({"event": "point", "row": row})
    return rows

"""ONNX backend conformance of hetc: every official case compiled for a target and simulated, compared with the
expected outputs by ONNX's own rule, next to what onnxruntime and onnx.reference achieve on the same cases.

    python tools/conformance.py                    # every case, results in /tmp/hetc-conformance.json
    python tools/conformance.py --jobs 2 --write-docs   # ... and regenerate docs/conformance.md
    python tools/conformance.py -k conv -k relu    # cases whose name contains one of the words
    python tools/conformance.py --subset           # the fast representative subset the test suite runs

Cases: ``onnx.backend.test.case.node.collect_testcases()`` (kind "node") and the model cases shipped in the
onnx wheel (``onnx/backend/test/data``: "simple", "pytorch-converted", "pytorch-operator", and the "light"
models of "real" with their reference outputs on the runner's own dummy inputs). A case passes when
``onnx.backend.test.runner.Runner.assert_similar_outputs`` accepts the outputs of every data set at the case's
tolerances (rtol 1e-3, atol 1e-7 unless the case says otherwise): same count, shapes and dtypes, allclose.

hetc runs each case through ``hetc.backend`` on the target (edge-soc by default, CP-SAT with a short time
limit). A case whose nodes all have NPU (DSP) kernels is run a second (third) time pinned to that device
(``single:npu``/``single:dsp``), so every kernel meets the official cases; the case passes only if every run
passes. Cases listed in ``tests/conformance_exclusions.jsonc`` are not compiled (``--include-excluded`` runs
them anyway, to find stale exclusions); onnxruntime and onnx.reference still run every case.
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
EXCLUSIONS = REPO / "tests" / "conformance_exclusions.jsonc"
DOCS = REPO / "docs" / "conformance.md"
DEFAULT_RESULTS = Path("/tmp/hetc-conformance.json")
MODEL_KINDS = ("simple", "pytorch-converted", "pytorch-operator", "real")
ORT_MAX_IR_VERSION = 13          # the newest IR onnxruntime 1.31 reads; capping it changes no semantics
CASE_TIMEOUT_S = 600
PINNED_DEVICES = ("npu", "dsp")
# The fast subset: the first case of each op family (name up to the first '_' after "test_") and a light model.
SUBSET_LIGHT_MODEL = "test_shufflenet"
# ... plus these families, so the main NPU/DSP kernels always meet an official case.
SUBSET_KERNEL_FAMILIES = {"conv", "convtranspose", "matmul", "gemm", "maxpool", "averagepool", "softmax",
                          "layer", "instancenorm", "resize", "gelu", "pad", "slice", "gather", "concat"}
# ... and these cases, each of a kind that once broke unseen by the rest of the subset (3-D Attention inputs in
# the cost model; packed sub-byte tensors read whole in the simulator).
SUBSET_CASES = {"test_attention_3d_gqa", "test_cast_FLOAT_to_INT4", "test_quantizelinear_int4"}


@dataclass
class Case:
    name: str
    kind: str                                  # node | simple | pytorch-converted | pytorch-operator | light
    rtol: float = 1e-3
    atol: float = 1e-7
    model: onnx.ModelProto | None = None
    data_sets: list[tuple[list[Any], list[Any]]] | None = None
    source: str = ""                           # where a model case lives on disk

    def load(self) -> "Case":
        """Read a model case's model and data sets from disk (node cases are generated in memory)."""
        if self.model is None:
            self.model, self.data_sets = _read_model_case(self)
        return self

    @property
    def ops(self) -> list[str]:
        return sorted({n.op_type for n in self.model.graph.node}) if self.model is not None else []


@dataclass
class CaseResult:
    name: str
    kind: str
    ops: list[str]
    hetc: str                                  # pass | fail | error | timeout | excluded
    reason: str = ""                           # grouping key of a failure or the exclusion group
    detail: str = ""
    ort: bool | None = None                    # onnxruntime passes the case (None: not run)
    ref: bool | None = None                    # onnx.reference passes the case
    placements: dict[str, list[str]] = field(default_factory=dict)  # run label -> "Op@device" per node
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- case loading
def node_cases() -> list[Case]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [Case(c.name, "node", c.rtol, c.atol, c.model, c.data_sets) for c in cases]


def model_cases() -> list[Case]:
    """The model cases of the wheel's data directory, not yet loaded (``Case.load``)."""
    from onnx.backend.test.loader import load_model_tests

    cases = []
    for kind in MODEL_KINDS:
        for c in sorted(load_model_tests(str(ONNX_DATA), kind=kind), key=lambda c: c.name):
            if c.model_dir is not None:
                cases.append(Case(c.name, kind, c.rtol, c.atol, source=c.model_dir))
            elif c.url and c.url.startswith("onnx/backend/test/data/light/"):
                cases.append(Case(c.name, "light", c.rtol, c.atol, source=str(ONNX_DATA.parent.parent.parent.parent
                                                                                 / c.url)))
    return cases


def _read_proto(path: str, type_proto: onnx.TypeProto) -> Any:
    data = Path(path).read_bytes()
    if type_proto.HasField("sequence_type"):
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if type_proto.HasField("optional_type"):
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def _read_model_case(case: Case) -> tuple[onnx.ModelProto, list]:
    """As onnx's runner reads them: test_data_set_*/{input,output}_<i>.pb; a light model gets the runner's
    deterministic dummy inputs (``arange / n``) and its shipped ``_output_<i>.pb`` reference outputs."""
    from onnx.backend.test.runner import Runner

    if case.kind == "light":
        model = onnx.load(case.source)
        inits = {t.name for t in model.graph.initializer}
        inputs = [Runner.generate_dummy_data(x, seed=0, random=False) for x in model.graph.input
                  if x.name not in inits]
        prefix = case.source.removesuffix(".onnx")
        outputs = [_read_proto(f"{prefix}_output_{i}.pb", o.type) for i, o in enumerate(model.graph.output)]
        return model, [(inputs, outputs)]
    model = onnx.load(os.path.join(case.source, "model.onnx"))
    data_sets = []
    for directory in sorted(glob.glob(os.path.join(case.source, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(directory, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(directory, "output_*.pb")))
        inputs = [_read_proto(os.path.join(directory, f"input_{i}.pb"), model.graph.input[i].type)
                  for i in range(n_in)]
        outputs = [_read_proto(os.path.join(directory, f"output_{i}.pb"), model.graph.output[i].type)
                   for i in range(n_out)]
        data_sets.append((inputs, outputs))
    return model, data_sets


def all_cases() -> list[Case]:
    return node_cases() + model_cases()


def family(name: str) -> str:
    return name.removeprefix("test_").split("_")[0]


def subset(cases: list[Case]) -> list[Case]:
    """The representative subset: the first node case of every 4th op family (a spread over the alphabet of
    op families) and of the main kernel families, ``SUBSET_CASES``, the first case of each model kind, and one
    light model."""
    by_family: dict[str, Case] = {}
    for case in cases:
        if case.kind == "node" and "_expanded" not in case.name:
            by_family.setdefault(family(case.name), case)
    families = list(by_family)
    chosen = [by_family[f] for i, f in enumerate(families) if i % 4 == 0 or f in SUBSET_KERNEL_FAMILIES]
    chosen += [c for c in cases if c.name in SUBSET_CASES and c not in chosen]
    kinds_seen: set[str] = set()
    for case in cases:
        if case.kind in ("simple", "pytorch-converted", "pytorch-operator") and case.kind not in kinds_seen:
            kinds_seen.add(case.kind)
            chosen.append(case)
        if case.kind == "light" and case.name == SUBSET_LIGHT_MODEL:
            chosen.append(case)
    return chosen


# ---------------------------------------------------------------------------------------------- exclusions
def strip_jsonc_comments(text: str) -> str:
    """JSON with ``//`` line comments: drop each comment, leaving string contents alone."""
    out = []
    for line in text.splitlines():
        in_string = escaped = False
        for i, ch in enumerate(line):
            if in_string:
                escaped = ch == "\\" and not escaped
                if ch == '"' and not escaped:
                    in_string = False
                continue
            if ch == '"':
                in_string = True
            elif line.startswith("//", i):
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def load_exclusions(path: Path = EXCLUSIONS) -> dict[str, str]:
    """case name -> the reason of its exclusion group."""
    groups = json.loads(strip_jsonc_comments(path.read_text()))["groups"]
    excluded: dict[str, str] = {}
    for group in groups:
        for name in group["cases"]:
            if name in excluded:
                raise ValueError(f"{path}: case {name} is excluded twice ('{excluded[name]}', '{group['reason']}')")
            excluded[name] = group["reason"]
    return excluded


# ---------------------------------------------------------------------------------------------- comparing
def similar(expected: list[Any], actual: list[Any], rtol: float, atol: float) -> str:
    """Empty when ONNX's runner accepts ``actual``, else its message (first lines)."""
    from onnx.backend.test.runner import Runner

    expected = [numpy_helper.to_array(e) if isinstance(e, onnx.TensorProto) else e for e in expected]
    try:
        with np.errstate(all="ignore"):
            Runner.assert_similar_outputs(expected, list(actual), rtol=rtol, atol=atol)
    except (AssertionError, TypeError, ValueError, AttributeError) as error:
        return _short(error)
    return ""


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:limit]}"


def passes(runner: Callable[[list[Any]], list[Any]], case: Case) -> tuple[bool, str]:
    """Run every data set of ``case`` through ``runner`` and compare."""
    for inputs, expected in case.data_sets or []:
        inputs = [numpy_helper.to_array(i) if isinstance(i, onnx.TensorProto) else i for i in inputs]
        mismatch = similar(expected, runner(inputs), case.rtol, case.atol)
        if mismatch:
            return False, mismatch
    return True, ""


def _feed_names(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def onnxruntime_passes(case: Case) -> bool:
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    model.ir_version = min(model.ir_version, ORT_MAX_IR_VERSION)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return passes(lambda inputs: session.run(None, dict(zip(names, inputs))), case)[0]
    except Exception:  # noqa: BLE001 - any refusal or crash means "onnxruntime does not pass it"
        return False


def reference_passes(case: Case) -> bool:
    from onnx.reference import ReferenceEvaluator

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = ReferenceEvaluator(case.model)
            names = _feed_names(case.model)
            return passes(lambda inputs: evaluator.run(None, dict(zip(names, inputs))), case)[0]
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------------------------------------- hetc
@dataclass(frozen=True)
class HetcSettings:
    target: str = "edge-soc"
    time_limit_s: float = 2.0
    num_workers: int = 1
    pin: bool = True          # also run pinned to each device that has kernels for every node


def hetc_run(case: Case, scheduler: str, settings: HetcSettings) -> tuple[str, str, list[str]]:
    """(status, detail, placement) of one compile + simulation of every data set."""
    from hetc.backend import prepare

    placement: list[str] = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        with prepare(case.model, target=settings.target, scheduler=scheduler, time_limit_s=settings.time_limit_s,
                     num_workers=settings.num_workers) as rep:
            ok, detail = passes(rep.run, case)
            for compiled in rep.compiled:
                placement += sorted({f"{t.op}@{t.engine}" for t in compiled.result.schedule.tasks
                                     if t.kind == "compute"})
    return ("pass" if ok else "fail"), detail, placement


def not_pinnable(error: Exception) -> bool:
    """The ScheduleError of ``single:<device>`` when some node has no kernel on that device."""
    from hetc.errors import ScheduleError

    return isinstance(error, ScheduleError) and "cannot run on" in str(error)


def reason_of(status: str, detail: str) -> str:
    """A grouping key: the error type and the head of its message, quoted names and numbers elided."""
    if status == "fail":
        return "outputs differ (" + detail.split(":")[0] + ")"
    head = re.split(r"[:;]", detail.split(": ", 1)[-1], maxsplit=1)[0]
    head = re.sub(r"'[^']*'", "'…'", head)
    head = re.sub(r"\d+", "N", head)
    return f"{detail.split(':')[0]}: {head[:90]}"


def run_case(case: Case, excluded: dict[str, str], settings: HetcSettings, with_references: bool = True
             ) -> CaseResult:
    start = time.perf_counter()
    case.load()
    result = CaseResult(case.name, case.kind, case.ops, hetc="excluded", reason=excluded.get(case.name, ""))
    if with_references:
        result.ort, result.ref = onnxruntime_passes(case), reference_passes(case)
    if case.name not in excluded:
        schedulers = ["cpsat"] + ([f"single:{d}" for d in PINNED_DEVICES] if settings.pin else [])
        for scheduler in schedulers:
            try:
                status, detail, placement = hetc_run(case, scheduler, settings)
            except TimeoutError:
                status, detail, placement = "timeout", f"TimeoutError: over {CASE_TIMEOUT_S} s", []
            except Exception as error:  # noqa: BLE001 - every failure is classified and reported
                if scheduler != "cpsat" and not_pinnable(error):
                    continue
                status, detail, placement = "error", _short(error), []
            label = scheduler
            result.placements[label] = placement
            if status != "pass":
                result.hetc, result.detail = status, f"[{label}] {detail}"
                result.reason = reason_of(status, detail)
                break
        else:
            result.hetc = "pass"
    result.seconds = round(time.perf_counter() - start, 3)
    return result


# ---------------------------------------------------------------------------------------------- driving
_WORKER_STATE: dict[str, Any] = {}


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError


def _work(index: int) -> dict[str, Any]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        case = _WORKER_STATE["cases"][index]
        return asdict(run_case(case, _WORKER_STATE["excluded"], _WORKER_STATE["settings"],
                               _WORKER_STATE["with_references"]))
    finally:
        signal.alarm(0)


def run_all(cases: list[Case], excluded: dict[str, str], settings: HetcSettings, jobs: int = 1,
            with_references: bool = True, progress: Callable[[int, int, dict], None] | None = None
            ) -> list[dict[str, Any]]:
    """Run every case (in ``jobs`` forked worker processes), results in case order."""
    _WORKER_STATE.update(cases=cases, excluded=excluded, settings=settings, with_references=with_references)
    results: list[dict[str, Any]] = []
    if jobs <= 1:
        iterator: Iterable[dict[str, Any]] = map(_work, range(len(cases)))
        for result in iterator:
            results.append(result)
            if progress:
                progress(len(results), len(cases), result)
        return results
    # One case per task: a long one (the light models come last) does not hold up a whole chunk.
    with multiprocessing.get_context("fork").Pool(jobs, maxtasksperchild=200) as pool:
        for result in pool.imap(_work, range(len(cases)), chunksize=1):
            results.append(result)
            if progress:
                progress(len(results), len(cases), result)
    return results


def _print_progress(done: int, total: int, result: dict[str, Any]) -> None:
    if result["hetc"] not in ("pass", "excluded"):
        print(f"[{done}/{total}] {result['name']}: {result['hetc']} {result['detail'][:200]}", flush=True)
    elif done % 100 == 0:
        print(f"[{done}/{total}]", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="keywords", action="append", default=[], help="only cases whose name has this")
    parser.add_argument("--kind", action="append", default=[], help="only these kinds (node, simple, light...)")
    parser.add_argument("--subset", action="store_true", help="the fast representative subset of the test suite")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--target", default="edge-soc")
    parser.add_argument("--time-limit", type=float, default=2.0, help="CP-SAT time limit per case, seconds")
    parser.add_argument("--no-pin", action="store_true", help="skip the runs pinned to the NPU and DSP")
    parser.add_argument("--no-references", action="store_true", help="skip onnxruntime and onnx.reference")
    parser.add_argument("--include-excluded", action="store_true", help="run the excluded cases too")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON file of per-case results")
    parser.add_argument("--write-docs", action="store_true", help=f"regenerate {DOCS.relative_to(REPO)}")
    parser.add_argument("--from-results", type=Path, help="do not run: summarise (and --write-docs) a results file")
    args = parser.parse_args(argv)
    if args.from_results:
        saved = json.loads(args.from_results.read_text())
        return _finish(saved["results"], saved["meta"], args.write_docs)

    cases = all_cases()
    if args.subset:
        cases = subset(cases)
    if args.keywords:
        cases = [c for c in cases if any(k in c.name for k in args.keywords)]
    if args.kind:
        cases = [c for c in cases if c.kind in args.kind]
    excluded = {} if args.include_excluded else load_exclusions()
    settings = HetcSettings(target=args.target, time_limit_s=args.time_limit, pin=not args.no_pin)
    print(f"{len(cases)} cases on {args.target}, {args.jobs} job(s)", flush=True)
    start = time.perf_counter()
    results = run_all(cases, excluded, settings, args.jobs, not args.no_references, _print_progress)
    wall = time.perf_counter() - start
    meta = {"target": args.target, "time_limit_s": args.time_limit, "pinned": not args.no_pin,
            "wall_s": round(wall, 1), "jobs": args.jobs, "onnx": onnx.__version__,
            "onnxruntime": _ort_version(), "command": " ".join(["python", "tools/conformance.py"] + (sys.argv[1:] if argv is None else argv))}
    args.results.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return _finish(results, meta, args.write_docs)


def _finish(results: list[dict[str, Any]], meta: dict[str, Any], docs: bool) -> int:
    from conformance_report import summarize, write_docs

    print(summarize(results, meta))
    if docs:
        DOCS.write_text(write_docs(results, meta, load_exclusions()))
        print(f"wrote {DOCS}")
    return 0


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

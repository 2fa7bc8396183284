"""int8 benchmark (issue 16): a float model and its QDQ quantization built side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_int8.py                 # MobileNetV2, ResNet-50
    python tools/bench_int8.py --models mobilenet_v2 --targets edge-soc --json out.json

Pairs: ``models/mobilenet_v2.onnx`` with ``models/mobilenet_v2_qdq.onnx``, and onnx's light ResNet-50 with
seeded random weights with its QDQ quantization (both made on demand into the cache of tools/make_models.py).
Per (model, target): the float build and the int8 build (CP-SAT), and the int8 build simulated functionally
and validated by the integer rule (docs/validation.md). Printed: the multiply-accumulates (MACs of Conv,
ConvTranspose, Gemm, MatMul and their integer forms) in integer ops and off the CPU, the planned makespans and
their ratio, the weight bytes read from DRAM by DMA (and in all, counting the on-chip hops of weights fanned
out through a staging memory) against the int8 weight bytes, and the validation. It reports what
is true of the tree it runs on: where the accelerators have no integer kernel, the integer ops run on the CPU
and the figures say so.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import make_models  # noqa: E402

from hetc.ir.tiles import is_alias  # noqa: E402
from hetc.pipeline import BuildOptions, build  # noqa: E402
from hetc.report.opclass import OP_CLASSES  # noqa: E402
from hetc.ir.fused import base_node  # noqa: E402

TARGETS = ("edge-soc", "multi-npu")
MAC_OPS = OP_CLASSES["conv"] | OP_CLASSES["matmul"]
INTEGER_MAC_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})


def node_macs(node) -> int:
    """Multiply-accumulates of a Conv/Gemm/MatMul-class node, float or integer (a fused node's base op; bias
    and epilogue additions are not MACs)."""
    base = base_node(node)
    out = math.prod(base.outputs[0].shape)
    if base.op_type == "ConvTranspose":   # every input element scatters into (M / group) x kernel outputs
        return math.prod(base.inputs[0].shape) * math.prod(base.inputs[1].shape[1:])
    if base.op_type in OP_CLASSES["conv"]:   # one MAC per weight element of a group per output element
        return out * math.prod(base.inputs[3 if base.op_type == "QLinearConv" else 1].shape[1:])
    if base.op_type == "Einsum":
        return 0   # no fixed contraction length; neither model has one
    a = base.inputs[0].shape
    return out * (a[0] if base.op_type == "Gemm" and base.attrs.get("transA", 0) else a[-1])


def model_pairs(names: list[str]) -> dict[str, tuple[Path, Path]]:
    """name -> (float model, QDQ model); ResNet-50's are made on demand (about 10 s the first time)."""
    pairs = {}
    for name in names:
        if name == "mobilenet_v2":
            pairs[name] = (REPO / "models" / "mobilenet_v2.onnx", REPO / "models" / "mobilenet_v2_qdq.onnx")
        elif name == "resnet50":
            pairs[name] = (make_models.cached_model("resnet50_float"), make_models.cached_model("resnet50_qdq"))
        else:
            raise SystemExit(f"unknown model {name}; choose mobilenet_v2, resnet50")
    return pairs


@dataclass
class Build:
    planned_us: float = 0.0
    macs: int = 0
    macs_integer: int = 0        # MACs in integer ops
    macs_off_cpu: int = 0        # MACs placed on an NPU or DSP
    macs_integer_off_cpu: int = 0
    weight_dma_bytes: int = 0    # weight constants read from DRAM by DMA
    float_weight_dma_bytes: int = 0
    weight_hops_bytes: int = 0   # every transfer of a weight constant (a staged weight's on-chip hops too)
    weight_bytes: int = 0        # weight constants in the graph (int8 ones for the int8 build)
    placement: dict[str, int] = field(default_factory=dict)
    compile_s: float = 0.0


@dataclass
class Case:
    model: str
    target: str
    fp32: Build | None = None
    int8: Build | None = None
    validation: str = ""
    passed: bool | None = None
    error: str | None = None


def measure_build(path: Path, target: str, validate: bool, time_limit: float | None):
    start = time.perf_counter()
    result = build(path, BuildOptions(target=target, validate=validate, time_limit_s=time_limit))
    figures = Build(compile_s=time.perf_counter() - start)
    graph, sched = result.graph, result.plan.schedule
    kinds = {d: dev.kind for d, dev in result.target.devices.items()}
    for node in graph.nodes:
        if is_alias(node) or node.op_type not in MAC_OPS:
            continue
        macs = node_macs(node)
        off_cpu = kinds[sched.placement[node.id]] != "cpu"
        integer = node.op_type in INTEGER_MAC_OPS
        figures.macs += macs
        figures.macs_integer += macs * integer
        figures.macs_off_cpu += macs * off_cpu
        figures.macs_integer_off_cpu += macs * (integer and off_cpu)
    # (a weight that carries its bias, hetc.ir.fused's packed bias, moves with it: its bias bytes are not weights)
    weights = {v.name: v for v in graph.values.values() if v.is_const and len(v.shape) >= 2}
    packed_bias_bytes = sum(n.inputs[1].nbytes - base_node(n).inputs[1].nbytes for n in graph.nodes
                            if not is_alias(n) and len(n.inputs) > 1 and n.inputs[1] is not None
                            and n.inputs[1].name in weights)
    figures.weight_bytes = sum(v.nbytes for v in weights.values()) - packed_bias_bytes
    for task in sched.tasks:
        if task.kind == "transfer" and task.value in weights:
            figures.weight_hops_bytes += task.bytes
        if task.kind == "transfer" and task.value in weights and task.src == result.target.dram:
            figures.weight_dma_bytes += task.bytes
            figures.float_weight_dma_bytes += task.bytes * (weights[task.value].dtype.startswith("float"))
    figures.planned_us = sched.makespan_ns / 1000
    for device in sched.placement.values():
        figures.placement[kinds[device]] = figures.placement.get(kinds[device], 0) + 1
    return figures, result.validation


def measure(name: str, paths: tuple[Path, Path], target: str, time_limit: float | None) -> Case:
    case = Case(name, target)
    try:
        case.fp32, _ = measure_build(paths[0], target, False, time_limit)
        case.int8, report = measure_build(paths[1], target, True, time_limit)
    except Exception as exc:  # a failed build is a row, not the end of the benchmark
        case.error = f"{type(exc).__name__}: {exc}"
        return case
    case.passed = report.passed
    case.validation = ("pass" if report.passed else "FAIL") + (f"; {report.headline}" if hasattr(report, "headline")
                                                                else "")
    return case


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


HEADER = ("| model | target | MACs in integer ops | MACs off the CPU (int8 / fp32) | int8 placement | planned µs "
          "fp32 | planned µs int8 | int8 / fp32 | weight MiB read from DRAM fp32 / int8 (float part) | "
          "int8 weight MiB moved in all | int8 weight MiB | validation (int8) |\n|" + "---|" * 12)


def row(c: Case) -> str:
    if c.error:
        return f"| {c.model} | {c.target} | error: {c.error[:120]} |" + " |" * 10
    f, q = c.fp32, c.int8
    placement = ", ".join(f"{k} {v}" for k, v in sorted(q.placement.items()))
    mib = 2 ** 20
    return (f"| {c.model} | {c.target} | {_share(q.macs_integer, q.macs)} | {_share(q.macs_off_cpu, q.macs)} / "
            f"{_share(f.macs_off_cpu, f.macs)} | {placement} | {f.planned_us:,.0f} | {q.planned_us:,.0f} | "
            f"{q.planned_us / f.planned_us:.2f} | {f.weight_dma_bytes / mib:.2f} / {q.weight_dma_bytes / mib:.2f} "
            f"({q.float_weight_dma_bytes / mib:.2f}) | {q.weight_hops_bytes / mib:.2f} | {q.weight_bytes / mib:.2f} "
            f"| {c.validation} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,resnet50")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--time-limit", type=float, default=None, help="CP-SAT budget per build (default: hetc's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cases = []
    print(HEADER, flush=True)
    for name, paths in model_pairs(args.models.split(",")).items():
        for target in args.targets.split(","):
            case = measure(name, paths, target, args.time_limit)
            cases.append(case)
            print(row(case), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return 0 if all(c.error is None and c.passed for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())

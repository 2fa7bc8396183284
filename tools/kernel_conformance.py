"""ONNX's official per-operator conformance cases through hetc's NPU (or DSP) kernels: a per-op table of
passing, onnxruntime-divergent, refused and failing cases, then the detail of everything that did not pass.

    python tools/kernel_conformance.py [--device npu|dsp]
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from hetc.sim.kernels.conformance import run_all

STATUSES = ("pass", "ort", "unsupported", "fail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="npu", choices=["npu", "dsp"])
    args = parser.parse_args()
    results = run_all(args.device)
    per_op: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        per_op[result.op_type][result.status] += 1
    print("| op | " + " | ".join(STATUSES) + " |")
    print("|---|" + "---:|" * len(STATUSES))
    for op in sorted(per_op):
        print(f"| {op} | " + " | ".join(str(per_op[op][s]) for s in STATUSES) + " |")
    totals = Counter(r.status for r in results)
    print(f"| **total ({len(results)} cases, {len(per_op)} ops)** | "
          + " | ".join(str(totals[s]) for s in STATUSES) + " |")
    for result in results:
        if result.status != "pass":
            print(f"\n{result.status}: {result.name}\n    {result.detail[:300]}")


if __name__ == "__main__":
    main()

"""Where a build puts its multiply-accumulates: MACs per device (convolution and matrix-product nodes, tiles
included, a MAC being 2 of hetc's operations), the share on the accelerators, the planned makespan.

    python tools/mac_share.py models/mobilenet_v2_qoperator.onnx --target edge-soc [--scheduler heft]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from hetc.api import compile
from hetc.target import node_class, node_flops

_MAC_CLASSES = ("conv", "depthwise", "matmul")


def mac_share(model: str, target: str, scheduler: str) -> tuple[Counter, float, str]:
    """(MACs per device, planned makespan in us, the target's name)."""
    result = compile(model, target=target, scheduler=scheduler)
    device_of = {row["name"]: row["device"] for row in result.placement}
    macs: Counter = Counter()
    for node in result.graph.nodes:
        if node_class(node) in _MAC_CLASSES and node.name in device_of:
            macs[device_of[node.name]] += node_flops(node) // 2
    return macs, result.schedule.makespan_ns / 1000, result.target.name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--target", default="edge-soc")
    parser.add_argument("--scheduler", default="cpsat")
    args = parser.parse_args(argv)
    macs, makespan_us, target = mac_share(args.model, args.target, args.scheduler)
    total = sum(macs.values())
    on_accelerators = sum(n for device, n in macs.items() if device != "cpu")
    per_device = ", ".join(f"{device} {n:,}" for device, n in sorted(macs.items()))
    print(f"{args.model} on {target}: {total:,} MACs ({per_device}); "
          f"{100 * on_accelerators / max(total, 1):.2f}% off the CPU; planned makespan {makespan_us:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of hetc's NPU kernels (numpy) against onnxruntime's CPU kernels on ResNet-50's convolutions and a
few other hot ops, batch 1, float32. Prints a markdown table (median of repeated runs).

    python tools/kernel_speed.py [--repeat 20] [--threads 1]

``--threads`` sets onnxruntime's intra-op threads (numpy's BLAS uses its own default).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import onnxruntime as ort

from hetc.sim.kernels import run_kernel, single_node_model

# (label, op, attrs, input shapes) — ResNet-50 v1 convolutions first.
CASES = [
    ("conv1 7x7/2 3->64 @224", "Conv", {"strides": [2, 2], "pads": [3, 3, 3, 3]}, [(1, 3, 224, 224), (64, 3, 7, 7)]),
    ("1x1 64->64 @56", "Conv", {}, [(1, 64, 56, 56), (64, 64, 1, 1)]),
    ("3x3 64->64 @56", "Conv", {"pads": [1, 1, 1, 1]}, [(1, 64, 56, 56), (64, 64, 3, 3)]),
    ("1x1 64->256 @56", "Conv", {}, [(1, 64, 56, 56), (256, 64, 1, 1)]),
    ("3x3/2 128->128 @56", "Conv", {"strides": [2, 2], "pads": [1, 1, 1, 1]}, [(1, 128, 56, 56), (128, 128, 3, 3)]),
    ("3x3 128->128 @28", "Conv", {"pads": [1, 1, 1, 1]}, [(1, 128, 28, 28), (128, 128, 3, 3)]),
    ("3x3 256->256 @14", "Conv", {"pads": [1, 1, 1, 1]}, [(1, 256, 14, 14), (256, 256, 3, 3)]),
    ("1x1/2 1024->2048 @14", "Conv", {"strides": [2, 2]}, [(1, 1024, 14, 14), (2048, 1024, 1, 1)]),
    ("3x3 512->512 @7", "Conv", {"pads": [1, 1, 1, 1]}, [(1, 512, 7, 7), (512, 512, 3, 3)]),
    ("depthwise 3x3 144 @56", "Conv", {"pads": [1, 1, 1, 1], "group": 144}, [(1, 144, 56, 56), (144, 1, 3, 3)]),
    ("MaxPool 3x3/2 64 @112", "MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
     [(1, 64, 112, 112)]),
    ("Gemm 2048->1000", "Gemm", {"transB": 1}, [(1, 2048), (1000, 2048), (1000,)]),
]


def _flops(op: str, shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> float:
    if op == "Conv":
        weight = shapes[1]
        return 2.0 * math.prod(out_shape) * math.prod(weight[1:])
    if op == "Gemm":
        return 2.0 * shapes[0][0] * shapes[1][0] * shapes[1][1]
    return float(math.prod(out_shape))


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (session creation, caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"| layer | NPU kernel (ms) | onnxruntime (ms, {args.threads} thread) | ratio | NPU GFLOP/s |")
    print("|---|---:|---:|---:|---:|")
    for label, op, attrs, shapes in CASES:
        inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        model = single_node_model(op, "", attrs, inputs, [("float32", ())], {"": 17})
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {f"hetc_in{i}": x for i, x in enumerate(inputs)}
        reference = session.run(None, feeds)[0]
        declared = [("float32", reference.shape)]
        result = run_kernel("npu", op, "", attrs, inputs, declared, {"": 17})[0]
        np.testing.assert_allclose(result, reference, rtol=1e-4, atol=1e-4)
        npu_ms = _median_ms(lambda: run_kernel("npu", op, "", attrs, inputs, declared, {"": 17}), args.repeat)
        ort_ms = _median_ms(lambda: session.run(None, feeds), args.repeat)
        gflops = _flops(op, shapes, reference.shape) / (npu_ms * 1e-3) / 1e9
        print(f"| {label} | {npu_ms:.2f} | {ort_ms:.2f} | {npu_ms / ort_ms:.2f}x | {gflops:.1f} |")


if __name__ == "__main__":
    main()

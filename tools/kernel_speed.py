"""Speed of hetc's NPU kernels (numpy) against onnxruntime's CPU kernels on ResNet-50's convolutions, the
other light models' hot convolution and pooling shapes (one per kernel strategy), batch 1, float32. Prints a
markdown table (median of repeated runs, the two sides interleaved).

    python tools/kernel_speed.py [--repeat 20] [--threads 1] [--only 3x3]

``--threads`` sets onnxruntime's intra-op threads; numpy's BLAS runs on one thread, as in the simulator
(``HETC_BLAS_THREADS``). ``--only`` keeps the cases whose label contains the given text. Convolutions run
near the single-core sgemm peak (the GFLOP/s column); onnxruntime's MLAS has AVX-512 kernels where
OpenBLAS is held to its Haswell (AVX2) ones here, hence roughly 2x for the large ones.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import onnxruntime as ort

from hetc.sim.kernels import run_kernel, single_node_model
from hetc.sim.kernels._blas import openblas_core

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
    # The other light models: Inception's 3x3 stem and stride-1 pools, DenseNet's few-output 3x3 (shifted
    # per-tap matmul) and 2x2 average pool, ZFNet's 5x5/2, ShuffleNet's grouped 1x1 and depthwise 3x3/2.
    ("3x3 64->192 @56 (inception)", "Conv", {"pads": [1, 1, 1, 1]}, [(1, 64, 56, 56), (192, 64, 3, 3)]),
    ("3x3 128->32 @56 (densenet)", "Conv", {"pads": [1, 1, 1, 1]}, [(1, 128, 56, 56), (32, 128, 3, 3)]),
    ("5x5/2 96->256 @54 (zfnet)", "Conv", {"strides": [2, 2], "pads": [1, 1, 1, 1]},
     [(1, 96, 54, 54), (256, 96, 5, 5)]),
    ("1x1 g4 272->68 @14 (shufflenet)", "Conv", {"group": 4}, [(1, 272, 14, 14), (68, 68, 1, 1)]),
    ("depthwise 3x3/2 112 @56", "Conv", {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 112},
     [(1, 112, 56, 56), (112, 1, 3, 3)]),
    ("MaxPool 3x3/1 512 @13", "MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, [(1, 512, 13, 13)]),
    ("AveragePool 3x3/1 576 @14", "AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
     [(1, 576, 14, 14)]),
    ("AveragePool 2x2/2 128 @56", "AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, [(1, 128, 56, 56)]),
]


def _flops(op: str, shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> float:
    if op == "Conv":
        weight = shapes[1]
        return 2.0 * math.prod(out_shape) * math.prod(weight[1:])
    if op == "Gemm":
        return 2.0 * shapes[0][0] * shapes[1][0] * shapes[1][1]
    return float(math.prod(out_shape))


def _median_ms(fns: list, repeat: int) -> list[float]:
    """Median wall time of each function, run interleaved so that the host's load weighs on all alike."""
    for fn in fns:
        fn()  # warm-up (session creation, caches)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, samples in zip(fns, times):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) * 1e3 for samples in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the cases whose label contains this text")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy BLAS: OpenBLAS {openblas_core()} kernels, 1 thread; median of {args.repeat} interleaved runs\n")
    print(f"| layer | NPU kernel (ms) | onnxruntime (ms, {args.threads} thread) | ratio | NPU GFLOP/s |")
    print("|---|---:|---:|---:|---:|")
    for label, op, attrs, shapes in CASES:
        if args.only not in label:
            continue
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
        npu_ms, ort_ms = _median_ms([lambda: run_kernel("npu", op, "", attrs, inputs, declared, {"": 17}),
                                     lambda: session.run(None, feeds)], args.repeat)
        gflops = _flops(op, shapes, reference.shape) / (npu_ms * 1e-3) / 1e9
        print(f"| {label} | {npu_ms:.2f} | {ort_ms:.2f} | {npu_ms / ort_ms:.2f}x | {gflops:.1f} |")


if __name__ == "__main__":
    main()

"""Generate hetc's model zoo: small, deterministic ONNX models that exercise the compiler.

Run ``python tools/make_models.py [--out models/]``. Every weight comes from a seeded generator and every
name from a counter, so two runs write byte-identical files (``tests/test_models.py`` checks this).
``--big`` additionally writes ``transformer24.onnx`` (a 24-layer encoder, thousands of nodes) for the
scheduler benchmark; it is too big to commit, so it goes to ``--big-out`` (a temp dir by default).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9  # onnxruntime refuses onnx 1.23's default IR version 14
OPSET = 17  # LayerNormalization needs >= 17; GELU is written with Erf so 17 suffices (Gelu is opset 20)
PRODUCER = "hetc-make_models"


class ModelBuilder:
    """Accumulates nodes and seeded float32 initializers, then emits a checked ``ModelProto``."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def fresh(self, stem: str) -> str:
        """A unique, stable name: ``stem`` followed by a per-stem counter."""
        index = self._counts.get(stem, 0)
        self._counts[stem] = index + 1
        return f"{stem}_{index}"

    def const(self, stem: str, array: np.ndarray) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def weight(self, stem: str, shape: Sequence[int], fan_in: int) -> str:
        """He-scaled normal weights keep activations O(1) through deep stacks."""
        scale = np.sqrt(2.0 / fan_in)
        return self.const(stem, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def small(self, stem: str, shape: Sequence[int], scale: float = 0.05, offset: float = 0.0) -> str:
        return self.const(stem, (offset + self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs: Sequence[str], n_outputs: int = 1, **attrs: object) -> list[str]:
        stem = op_type.lower()
        outputs = [self.fresh(f"{stem}_out") for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=self.fresh(stem), **attrs))
        return outputs

    def op1(self, op_type: str, inputs: Sequence[str], **attrs: object) -> str:
        return self.op(op_type, inputs, **attrs)[0]

    def i64(self, stem: str, values: Sequence[int]) -> str:
        return self.const(stem, np.asarray(values, dtype=np.int64))

    def f32(self, stem: str, value: float | np.ndarray) -> str:
        return self.const(stem, np.asarray(value, dtype=np.float32))

    # --- layers -------------------------------------------------------------------------------------------
    def conv(self, x: str, c_in: int, c_out: int, kernel: int, stride: int = 1, group: int = 1,
             bias: bool = True) -> str:
        w = self.weight("conv_w", (c_out, c_in // group, kernel, kernel), fan_in=c_in // group * kernel * kernel)
        inputs = [x, w] + ([self.small("conv_b", (c_out,))] if bias else [])
        pad = kernel // 2
        return self.op1("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                        pads=[pad, pad, pad, pad], group=group)

    def batch_norm(self, x: str, channels: int) -> str:
        gamma = self.small("bn_gamma", (channels,), 0.1, 1.0)
        beta = self.small("bn_beta", (channels,), 0.1)
        mean = self.small("bn_mean", (channels,), 0.1)
        var = self.const("bn_var", self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        return self.op1("BatchNormalization", [x, gamma, beta, mean, var], epsilon=1e-5)

    def relu6(self, x: str) -> str:
        return self.op1("Clip", [x, self.f32("clip_min", 0.0), self.f32("clip_max", 6.0)])

    def max_pool(self, x: str) -> str:
        return self.op1("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def linear(self, x: str, d_in: int, d_out: int, bias: bool = True) -> str:
        """x @ W (+ b) with MatMul (+ Add): the pattern the MatMul+Add fusion pass looks for."""
        y = self.op1("MatMul", [x, self.weight("mm_w", (d_in, d_out), fan_in=d_in)])
        return self.op1("Add", [y, self.small("mm_b", (d_out,))]) if bias else y

    def layer_norm(self, x: str, width: int) -> str:
        gamma = self.small("ln_gamma", (width,), 0.05, 1.0)
        beta = self.small("ln_beta", (width,), 0.05)
        return self.op1("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        """Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), in opset-17 ops."""
        scaled = self.op1("Mul", [x, self.f32("inv_sqrt2", 1.0 / np.sqrt(2.0))])
        one_plus = self.op1("Add", [self.op1("Erf", [scaled]), self.f32("one", 1.0)])
        return self.op1("Mul", [self.op1("Mul", [x, self.f32("half", 0.5)]), one_plus])

    def classifier(self, x: str, channels: int, classes: int) -> str:
        """GlobalAveragePool -> Flatten -> Gemm: the standard CNN head."""
        pooled = self.op1("Flatten", [self.op1("GlobalAveragePool", [x])], axis=1)
        w = self.weight("fc_w", (classes, channels), fan_in=channels)
        return self.op1("Gemm", [pooled, w, self.small("fc_b", (classes,))], transB=1)

    # --- output ---------------------------------------------------------------------------------------------
    def build(self, inputs: Sequence[tuple[str, int, Sequence[int]]],
              outputs: Sequence[tuple[str, str, int, Sequence[int]]]) -> onnx.ModelProto:
        """``inputs``: (name, elem_type, shape); ``outputs``: (internal name, public name, elem_type, shape)."""
        # Rename rather than append Identity nodes, so the zoo has no trivial output copies.
        renames = {internal: public for internal, public, _, _ in outputs}
        for node in self.nodes:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs],
            [helper.make_tensor_value_info(n, t, list(s)) for _, n, t, s in outputs],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


def tiny_cnn() -> onnx.ModelProto:
    """Three Conv-BN-Relu-MaxPool stages and a classifier: the quickest model for end-to-end tests."""
    b = ModelBuilder("tiny_cnn", seed=1)
    x, channels = "x", 3
    for width in (8, 16, 32):
        x = b.conv(x, channels, width, kernel=3, bias=False)
        x = b.max_pool(b.op1("Relu", [b.batch_norm(x, width)]))
        channels = width
    logits = b.classifier(x, channels, 10)
    return b.build([("x", FLOAT, (1, 3, 32, 32))], [(logits, "logits", FLOAT, (1, 10))])


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "tiny_cnn": tiny_cnn,
}


def write_models(out_dir: Path, builders: dict[str, Callable[[], onnx.ModelProto]] = MODELS) -> list[Path]:
    """Build every model in ``builders`` and write ``<name>.onnx`` into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in builders.items():
        path = out_dir / f"{name}.onnx"
        path.write_bytes(build().SerializeToString(deterministic=True))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "models",
                        help="directory for the committed zoo (default: models/)")
    args = parser.parse_args(argv)
    for path in write_models(args.out):
        print(f"{path}  {path.stat().st_size:>9,d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

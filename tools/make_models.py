"""Generate hetc's model zoo: small, deterministic ONNX models that exercise the compiler.

Run ``python tools/make_models.py [--out models/]``. Every weight comes from a seeded generator and every
name from a counter, so two runs write byte-identical files (``tests/test_models.py`` checks this).
``--big`` additionally writes ``transformer24.onnx`` (a 24-layer encoder, thousands of nodes) for the
scheduler benchmark; it is too big to commit, so it goes to ``--big-out`` (a temp dir by default).
``--on-demand`` makes the QDQ ResNet-50 (about 25 MB) and its float model into ``--cache``; tests and
benchmarks call ``cached_model`` instead, which makes them there once.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
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
        self._shared: dict[tuple[str, str, bytes], str] = {}
        self.weights: dict[str, np.ndarray] = {}   # named weights a model adds itself (the Llama graphs)

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

    def shared(self, stem: str, array: np.ndarray) -> str:
        """A fixed (not random) constant, stored once however often it is used, as exporters dedupe them."""
        key = (stem, f"{array.dtype.str}{array.shape}", array.tobytes())
        if key not in self._shared:
            self._shared[key] = self.const(stem, array)
        return self._shared[key]

    def i64(self, stem: str, values: Sequence[int]) -> str:
        return self.shared(stem, np.asarray(values, dtype=np.int64))

    def f32(self, stem: str, value: float | np.ndarray) -> str:
        return self.shared(stem, np.asarray(value, dtype=np.float32))

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


# MobileNetV2 settings (expansion t, output channels c, repeats n, first stride s) at a narrow width.
MOBILENET_BLOCKS = ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 3, 2), (6, 32, 2, 2), (6, 48, 2, 1), (6, 80, 1, 2))


def _inverted_residual(b: ModelBuilder, x: str, c_in: int, c_out: int, expand: int, stride: int) -> str:
    hidden = c_in * expand
    h = x
    if expand != 1:
        h = b.relu6(b.batch_norm(b.conv(h, c_in, hidden, kernel=1, bias=False), hidden))
    h = b.relu6(b.batch_norm(b.conv(h, hidden, hidden, kernel=3, stride=stride, group=hidden, bias=False),
                             hidden))
    h = b.batch_norm(b.conv(h, hidden, c_out, kernel=1, bias=False), c_out)  # linear bottleneck: no activation
    return b.op1("Add", [x, h]) if stride == 1 and c_in == c_out else h


def mobilenet_v2() -> onnx.ModelProto:
    """Inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project), ReLU6 as Clip, residual Adds."""
    b = ModelBuilder("mobilenet_v2", seed=2)
    x = b.relu6(b.batch_norm(b.conv("x", 3, 16, kernel=3, stride=2, bias=False), 16))
    channels = 16
    for expand, width, repeats, first_stride in MOBILENET_BLOCKS:
        for i in range(repeats):
            x = _inverted_residual(b, x, channels, width, expand, first_stride if i == 0 else 1)
            channels = width
    x = b.relu6(b.batch_norm(b.conv(x, channels, 256, kernel=1, bias=False), 256))
    logits = b.classifier(x, 256, 100)
    return b.build([("x", FLOAT, (1, 3, 96, 96))], [(logits, "logits", FLOAT, (1, 100))])


# GPT decoder: one decoding step of NEW tokens on top of a KV cache of PAST tokens.
GPT = {"vocab": 512, "d_model": 128, "heads": 4, "blocks": 4, "new": 8, "past": 24}


def _causal_mask(new: int, past: int) -> np.ndarray:
    """Additive mask: new token i sits at absolute position past + i and may see positions <= past + i."""
    query_pos = past + np.arange(new)[:, None]
    key_pos = np.arange(past + new)[None, :]
    return np.where(key_pos <= query_pos, 0.0, -1e9).astype(np.float32)


def _split_heads(b: ModelBuilder, x: str, tokens: int, heads: int, head_dim: int) -> str:
    """[1, T, H*D] -> [1, H, T, D]."""
    shaped = b.op1("Reshape", [x, b.i64("heads_shape", (1, tokens, heads, head_dim))])
    return b.op1("Transpose", [shaped], perm=[0, 2, 1, 3])


def _gpt_block(b: ModelBuilder, x: str, layer: int) -> tuple[str, str, str]:
    """Pre-norm attention with a KV cache, then a GELU MLP; returns (x, present_key, present_value)."""
    d, heads, new, past = GPT["d_model"], GPT["heads"], GPT["new"], GPT["past"]
    head_dim = d // heads
    qkv = b.linear(b.layer_norm(x, d), d, 3 * d)
    q, k, v = b.op("Split", [qkv, b.i64("qkv_split", (d, d, d))], n_outputs=3, axis=-1)
    q, k, v = (_split_heads(b, t, new, heads, head_dim) for t in (q, k, v))
    present_k = b.op1("Concat", [f"past_key_{layer}", k], axis=2)
    present_v = b.op1("Concat", [f"past_value_{layer}", v], axis=2)
    scores = b.op1("MatMul", [q, b.op1("Transpose", [present_k], perm=[0, 1, 3, 2])])
    scores = b.op1("Mul", [scores, b.f32("attn_scale", 1.0 / np.sqrt(head_dim))])
    scores = b.op1("Add", [scores, b.shared("causal_mask", _causal_mask(new, past))])
    context = b.op1("MatMul", [b.op1("Softmax", [scores], axis=-1), present_v])
    context = b.op1("Transpose", [context], perm=[0, 2, 1, 3])
    context = b.op1("Reshape", [context, b.i64("merge_shape", (1, new, d))])
    x = b.op1("Add", [x, b.linear(context, d, d)])
    hidden = b.gelu(b.linear(b.layer_norm(x, d), d, 4 * d))
    x = b.op1("Add", [x, b.linear(hidden, 4 * d, d)])
    return x, present_k, present_v


def gpt_decoder() -> onnx.ModelProto:
    """A GPT-style decoder step: Gather embeddings, 4 pre-norm blocks with KV cache, LM head."""
    b = ModelBuilder("gpt_decoder", seed=3)
    vocab, d, heads, new, past = GPT["vocab"], GPT["d_model"], GPT["heads"], GPT["new"], GPT["past"]
    tokens = b.op1("Gather", [b.small("wte", (vocab, d), 0.1), "input_ids"], axis=0)
    positions = b.op1("Gather", [b.small("wpe", (past + new, d), 0.1), b.i64("position_ids", range(past, past + new))],
                      axis=0)
    x = b.op1("Add", [tokens, positions])
    cache_shape = (1, heads, past, d // heads)
    present_shape = (1, heads, past + new, d // heads)
    inputs: list[tuple[str, int, Sequence[int]]] = [("input_ids", INT64, (1, new))]
    outputs: list[tuple[str, str, int, Sequence[int]]] = []
    for layer in range(GPT["blocks"]):
        inputs += [(f"past_key_{layer}", FLOAT, cache_shape), (f"past_value_{layer}", FLOAT, cache_shape)]
        x, present_k, present_v = _gpt_block(b, x, layer)
        outputs += [(present_k, f"present_key_{layer}", FLOAT, present_shape),
                    (present_v, f"present_value_{layer}", FLOAT, present_shape)]
    logits = b.linear(b.layer_norm(x, d), d, vocab, bias=False)
    return b.build(inputs, [(logits, "logits", FLOAT, (1, new, vocab))] + outputs)


# Llama-style decoder: RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP, untied LM head; two graphs
# with the same weights: prefill (a 128-token prompt) and decode (one token against a 512-entry KV cache).
LLAMA = {"vocab": 512, "d_model": 128, "heads": 4, "kv_heads": 2, "head_dim": 32, "hidden": 384, "layers": 4,
         "prompt": 128, "cache": 512, "eps": 1e-5, "rope_base": 10000.0}


def _llama_weights() -> dict[str, np.ndarray]:
    """Every weight of the Llama model by name, seeded and fan-in scaled (std 1/sqrt(fan_in)); both graphs
    take these very arrays."""
    rng = np.random.default_rng(7)
    d, hd, hidden, vocab = LLAMA["d_model"], LLAMA["head_dim"], LLAMA["hidden"], LLAMA["vocab"]
    shapes: dict[str, tuple[int, int]] = {"embed": (vocab, d)}
    for layer in range(LLAMA["layers"]):
        shapes |= {f"layers.{layer}.wq": (d, LLAMA["heads"] * hd), f"layers.{layer}.wk": (d, LLAMA["kv_heads"] * hd),
                   f"layers.{layer}.wv": (d, LLAMA["kv_heads"] * hd), f"layers.{layer}.wo": (LLAMA["heads"] * hd, d),
                   f"layers.{layer}.w_gate": (d, hidden), f"layers.{layer}.w_up": (d, hidden),
                   f"layers.{layer}.w_down": (hidden, d)}
    shapes["lm_head"] = (d, vocab)
    weights = {name: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32) for name, shape in shapes.items()}
    weights["embed"] = (rng.standard_normal((vocab, d)) * 0.5).astype(np.float32)   # rows, not a fan-in product
    for layer in range(LLAMA["layers"]):
        for norm in ("attn_norm", "mlp_norm"):
            weights[f"layers.{layer}.{norm}"] = (1 + 0.05 * rng.standard_normal(d)).astype(np.float32)
    weights["final_norm"] = (1 + 0.05 * rng.standard_normal(d)).astype(np.float32)
    return weights


def _rms_norm(b: ModelBuilder, x: str, weight: str) -> str:
    """x * 1/sqrt(mean(x^2) + eps) * w, as torch exports Llama's RMSNorm (Pow, ReduceMean, Add, Sqrt,
    Reciprocal, Mul, Mul)."""
    mean_square = b.op1("ReduceMean", [b.op1("Pow", [x, b.f32("two", 2.0)])], axes=[-1], keepdims=1)
    inverse = b.op1("Reciprocal", [b.op1("Sqrt", [b.op1("Add", [mean_square, b.f32("rms_eps", LLAMA["eps"])])])])
    return b.op1("Mul", [weight, b.op1("Mul", [x, inverse])])


def _rotary(b: ModelBuilder, x: str, positions: Sequence[int]) -> str:
    """Rotary position embedding of [1, H, T, D] heads: x * cos + rotate_half(x) * sin, rotate_half(x) =
    Concat(-x2, x1) of the two halves (the Llama/NeoX form); cos and sin are constants of the positions."""
    half = LLAMA["head_dim"] // 2
    inv_freq = 1.0 / LLAMA["rope_base"] ** (np.arange(half) / half)
    angles = np.asarray(positions, np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    cos = b.shared("rope_cos", np.cos(angles).astype(np.float32))
    sin = b.shared("rope_sin", np.sin(angles).astype(np.float32))
    x1, x2 = b.op("Split", [x, b.i64("rope_split", (half, half))], n_outputs=2, axis=-1)
    rotated = b.op1("Concat", [b.op1("Neg", [x2]), x1], axis=-1)
    return b.op1("Add", [b.op1("Mul", [x, cos]), b.op1("Mul", [rotated, sin])])


def _heads(b: ModelBuilder, x: str, tokens: int, heads: int) -> str:
    """[1, T, H*D] -> [1, H, T, D]."""
    shaped = b.op1("Reshape", [x, b.i64("heads_shape", (1, tokens, heads, LLAMA["head_dim"]))])
    return b.op1("Transpose", [shaped], perm=[0, 2, 1, 3])


def _repeat_kv(b: ModelBuilder, x: str, length: int) -> str:
    """Grouped-query heads: each of the kv_heads K/V heads serves heads / kv_heads query heads (HF's
    repeat_kv: Unsqueeze, Expand, Reshape)."""
    kv, heads, hd = LLAMA["kv_heads"], LLAMA["heads"], LLAMA["head_dim"]
    expanded = b.op1("Expand", [b.op1("Unsqueeze", [x, b.i64("kv_axis", (2,))]),
                                b.i64("kv_expand", (1, kv, heads // kv, length, hd))])
    return b.op1("Reshape", [expanded, b.i64("kv_merge", (1, heads, length, hd))])


def _llama_layer(b: ModelBuilder, x: str, layer: int, tokens: int, past: int) -> tuple[str, str, str]:
    """One pre-norm decoder layer on ``tokens`` new tokens after ``past`` cached ones; returns (x, present
    keys, present values). The cache is ``present = Concat(past, new)`` (prefill has no past)."""
    w = {name.split(".")[-1]: name for name in b.weights if name.startswith(f"layers.{layer}.")}
    d, heads, kv, hd = LLAMA["d_model"], LLAMA["heads"], LLAMA["kv_heads"], LLAMA["head_dim"]
    positions = range(past, past + tokens)
    h = _rms_norm(b, x, w["attn_norm"])
    q = _rotary(b, _heads(b, b.op1("MatMul", [h, w["wq"]]), tokens, heads), positions)
    k = _rotary(b, _heads(b, b.op1("MatMul", [h, w["wk"]]), tokens, kv), positions)
    v = _heads(b, b.op1("MatMul", [h, w["wv"]]), tokens, kv)
    if past:
        k = b.op1("Concat", [f"past_key_{layer}", k], axis=2)
        v = b.op1("Concat", [f"past_value_{layer}", v], axis=2)
    length = past + tokens
    scores = b.op1("MatMul", [q, b.op1("Transpose", [_repeat_kv(b, k, length)], perm=[0, 1, 3, 2])])
    scores = b.op1("Mul", [scores, b.f32("attn_scale", 1.0 / np.sqrt(hd))])
    if tokens > 1:   # the prompt attends causally; the decode token sees the whole cache
        scores = b.op1("Add", [scores, b.shared("causal_mask", _causal_mask(tokens, past))])
    context = b.op1("MatMul", [b.op1("Softmax", [scores], axis=-1), _repeat_kv(b, v, length)])
    context = b.op1("Reshape", [b.op1("Transpose", [context], perm=[0, 2, 1, 3]), b.i64("merge_shape", (1, tokens, d))])
    x = b.op1("Add", [x, b.op1("MatMul", [context, w["wo"]])])
    h = _rms_norm(b, x, w["mlp_norm"])
    gate = b.op1("MatMul", [h, w["w_gate"]])
    silu = b.op1("Mul", [gate, b.op1("Sigmoid", [gate])])
    mlp = b.op1("MatMul", [b.op1("Mul", [silu, b.op1("MatMul", [h, w["w_up"]])]), w["w_down"]])
    return b.op1("Add", [x, mlp]), k, v


def _llama(name: str, tokens: int, past: int) -> onnx.ModelProto:
    b = ModelBuilder(name, seed=7)
    b.weights = _llama_weights()
    for weight_name, array in b.weights.items():
        b.initializers.append(numpy_helper.from_array(array, weight_name))
    d, kv, hd = LLAMA["d_model"], LLAMA["kv_heads"], LLAMA["head_dim"]
    x = b.op1("Gather", ["embed", "input_ids"], axis=0)
    inputs: list[tuple[str, int, Sequence[int]]] = [("input_ids", INT64, (1, tokens))]
    outputs: list[tuple[str, str, int, Sequence[int]]] = []
    for layer in range(LLAMA["layers"]):
        if past:
            inputs += [(f"past_key_{layer}", FLOAT, (1, kv, past, hd)), (f"past_value_{layer}", FLOAT, (1, kv, past, hd))]
        x, k, v = _llama_layer(b, x, layer, tokens, past)
        outputs += [(k, f"present_key_{layer}", FLOAT, (1, kv, past + tokens, hd)),
                    (v, f"present_value_{layer}", FLOAT, (1, kv, past + tokens, hd))]
    logits = b.op1("MatMul", [_rms_norm(b, x, "final_norm"), "lm_head"])
    return b.build(inputs, [(logits, "logits", FLOAT, (1, tokens, LLAMA["vocab"]))] + outputs)


def llama_prefill() -> onnx.ModelProto:
    """The Llama-style decoder over a 128-token prompt: logits and the prompt's KV cache."""
    return _llama("llama_prefill", LLAMA["prompt"], 0)


def llama_decode() -> onnx.ModelProto:
    """One decode step of the same weights: 1 token against a 512-entry cache (past_key/past_value inputs,
    present = Concat(past, new) outputs)."""
    return _llama("llama_decode", 1, LLAMA["cache"])


MOE = {"tokens": 16, "d_model": 64, "hidden": 128, "experts": 4, "top_k": 2}


def moe(tokens: int = MOE["tokens"], experts: int = MOE["experts"], top_k: int | None = MOE["top_k"],
        name: str = "moe", d_model: int = MOE["d_model"], hidden: int = MOE["hidden"]) -> onnx.ModelProto:
    """Top-k routed mixture of experts with dense dispatch: every expert runs on every token, the gate
    weights (zero for unchosen experts) pick the result, so every shape is static. With ``top_k`` None, a
    dense model: no router, the experts' outputs summed (tools/bench_moe.py's baseline)."""
    b = ModelBuilder(name, seed=4)
    d = d_model
    gate_columns: list[str] = []
    if top_k is not None:
        probs = b.op1("Softmax", [b.linear("x", d, experts, bias=False)], axis=-1)
        _, chosen = b.op("TopK", [probs, b.i64("top_k", (top_k,))], n_outputs=2, axis=-1)
        one_hot = b.op1("OneHot", [chosen, b.i64("depth", (experts,)), b.f32("off_on", np.array([0.0, 1.0]))],
                        axis=-1)
        mask = b.op1("ReduceSum", [one_hot, b.i64("k_axis", (1,))], keepdims=0)  # [tokens, experts] of 0/1
        gates = b.op1("Mul", [probs, mask])
        gates = b.op1("Div", [gates, b.op1("ReduceSum", [gates, b.i64("expert_axis", (1,))], keepdims=1)])
        gate_columns = b.op("Split", [gates, b.i64("gate_split", (1,) * experts)], n_outputs=experts, axis=1)
    outputs = []
    for k in range(experts):
        expert_out = b.linear(b.op1("Relu", [b.linear("x", d, hidden)]), hidden, d)
        outputs.append(b.op1("Mul", [expert_out, gate_columns[k]]) if gate_columns else expert_out)
    y = b.op1("Add", ["x", b.op1("Sum", outputs)])
    return b.build([("x", FLOAT, (tokens, d))], [(y, "y", FLOAT, (tokens, d))])


def _double_conv(b: ModelBuilder, x: str, c_in: int, c_out: int) -> str:
    x = b.op1("Relu", [b.conv(x, c_in, c_out, kernel=3)])
    return b.op1("Relu", [b.conv(x, c_out, c_out, kernel=3)])


def unet() -> onnx.ModelProto:
    """A two-level U-Net: skip connections make long-lived buffers, a hard case for memory planning."""
    b = ModelBuilder("unet", seed=5)
    widths = (16, 32)
    x, channels, skips = "x", 3, []
    for width in widths:
        x = _double_conv(b, x, channels, width)
        skips.append((x, width))
        x, channels = b.max_pool(x), width
    x = _double_conv(b, x, channels, 64)
    channels = 64
    scales = b.f32("up_scales", np.array([1.0, 1.0, 2.0, 2.0]))
    for skip, width in reversed(skips):
        up = b.op1("Resize", [x, "", scales], mode="nearest")
        x = _double_conv(b, b.op1("Concat", [up, skip], axis=1), channels + width, width)
        channels = width
    y = b.conv(x, channels, 2, kernel=1)
    return b.build([("x", FLOAT, (1, 3, 64, 64))], [(y, "y", FLOAT, (1, 2, 64, 64))])


# The scheduler benchmark's big graph: light tensors, many nodes, lots of parallel per-head branches.
TRANSFORMER24 = {"layers": 24, "tokens": 32, "d_model": 64, "heads": 8}


def _layer_norm_decomposed(b: ModelBuilder, x: str, width: int) -> str:
    """LayerNorm as exporters before opset 17 write it: nine elementwise/reduce nodes."""
    centred = b.op1("Sub", [x, b.op1("ReduceMean", [x], axes=[-1], keepdims=1)])  # axes: attribute until opset 18
    variance = b.op1("ReduceMean", [b.op1("Pow", [centred, b.f32("two", 2.0)])], axes=[-1], keepdims=1)
    std = b.op1("Sqrt", [b.op1("Add", [variance, b.f32("ln_eps", 1e-5)])])
    normed = b.op1("Div", [centred, std])
    return b.op1("Add", [b.op1("Mul", [normed, b.small("ln_gamma", (width,), 0.05, 1.0)]),
                         b.small("ln_beta", (width,), 0.05)])


def _encoder_layer(b: ModelBuilder, x: str) -> str:
    """Post-norm encoder layer with attention written per head, so heads are independent branches."""
    d, heads = TRANSFORMER24["d_model"], TRANSFORMER24["heads"]
    head_dim = d // heads
    q, k, v = b.op("Split", [b.linear(x, d, 3 * d), b.i64("qkv_split", (d, d, d))], n_outputs=3, axis=-1)
    per_head = b.i64("head_split", (head_dim,) * heads)
    qs, ks, vs = (b.op("Split", [t, per_head], n_outputs=heads, axis=-1) for t in (q, k, v))
    scale = b.f32("attn_scale", 1.0 / np.sqrt(head_dim))
    contexts = []
    for q_h, k_h, v_h in zip(qs, ks, vs):
        scores = b.op1("Mul", [b.op1("MatMul", [q_h, b.op1("Transpose", [k_h], perm=[1, 0])]), scale])
        contexts.append(b.op1("MatMul", [b.op1("Softmax", [scores], axis=-1), v_h]))
    attended = b.linear(b.op1("Concat", contexts, axis=-1), d, d)
    x = _layer_norm_decomposed(b, b.op1("Add", [x, attended]), d)
    mlp = b.linear(b.gelu(b.linear(x, d, 4 * d)), 4 * d, d)
    return _layer_norm_decomposed(b, b.op1("Add", [x, mlp]), d)


def transformer24() -> onnx.ModelProto:
    """24 encoder layers over [tokens, d_model]: thousands of small nodes for the scheduler benchmark."""
    b = ModelBuilder("transformer24", seed=6)
    shape = (TRANSFORMER24["tokens"], TRANSFORMER24["d_model"])
    x = "x"
    for _ in range(TRANSFORMER24["layers"]):
        x = _encoder_layer(b, x)
    return b.build([("x", FLOAT, shape)], [(x, "y", FLOAT, shape)])


# --- Quantized (QDQ) models ----------------------------------------------------------------------------------
# onnxruntime's own quantizer (quantize_static, QDQ format, per-channel symmetric int8 weights, asymmetric
# activations calibrated with MinMax on seeded standard-normal inputs) applied to float models with seeded
# fan-in-scaled weights, after onnxruntime's pre-processing (shape inference, Conv+BatchNormalization folding),
# as a deployment flow quantizes a model. Activations are int8 (see mobilenet_v2_qdq).
QDQ_CALIBRATION_SAMPLES = 4
RESNET50_QDQ = "resnet50_qdq"   # made on demand (about 25 MB): cached_model(RESNET50_QDQ)


def _calibration_reader(model: onnx.ModelProto, seed: int):
    from onnxruntime.quantization import CalibrationDataReader

    rng = np.random.default_rng(seed)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    batches = iter([{name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
                    for _ in range(QDQ_CALIBRATION_SAMPLES)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    return Reader()


def quantize_qdq(model: onnx.ModelProto, seed: int, activation: str = "uint8") -> onnx.ModelProto:
    """``model`` quantized by ``onnxruntime.quantization.quantize_static`` in the QDQ format: per-channel
    int8 weights, ``activation`` (uint8 or int8) activations, calibrated on seeded random inputs."""
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)

    activation_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activation]
    with tempfile.TemporaryDirectory() as scratch:
        float_path, prepared, quantized = (str(Path(scratch) / n) for n in ("f.onnx", "p.onnx", "q.onnx"))
        onnx.save(model, float_path)
        quant_pre_process(float_path, prepared)
        quantize_static(prepared, quantized, _calibration_reader(model, seed), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=activation_type, weight_type=QuantType.QInt8)
        result = onnx.load(quantized)
    used = {node.domain for node in result.graph.node}   # the pre-processor stamps every domain it knows
    kept = [o for o in result.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del result.opset_import[:]
    result.opset_import.extend(kept)
    result.producer_name, result.producer_version = PRODUCER, ""
    result.ir_version = IR_VERSION
    onnx.checker.check_model(result, full_check=True)
    return result


def mobilenet_v2_qdq() -> onnx.ModelProto:
    """models/mobilenet_v2.onnx quantized: int8 activations, per-channel int8 weights. Not uint8: onnxruntime's
    u8s8 convolution on x86 without VNNI saturates 16-bit pair sums, which full-range int8 weights reach
    (docs/validation.md measures it); s8s8 is exact there."""
    return quantize_qdq(mobilenet_v2(), seed=7, activation="int8")


def resnet50_float() -> onnx.ModelProto:
    """onnx's light ResNet-50 with seeded fan-in-scaled weights (hetc.validate.weights, seed 0), its two-input
    Sums written as Add (the quantizer has no Sum) at opset 13, and the final Softmax cut: the output is the
    logits (a softmax of random logits saturates to one-hot, which would hide every numeric error)."""
    from onnx import version_converter

    from hetc.validate.weights import randomize_weights

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    model = version_converter.convert_version(randomize_weights(onnx.load(str(light)), seed=0), 13)
    graph = model.graph
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    for node in graph.node:
        if node.op_type == "Sum" and len(node.input) == 2:
            node.op_type = "Add"
    logits = softmax.input[0]
    graph.node.remove(softmax)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(logits, FLOAT, [1, 1000]))
    initializers = {t.name for t in graph.initializer}   # IR 3 lists them as graph inputs too
    read = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in read]   # not the filled weights' shape constants
    del graph.initializer[:]
    graph.initializer.extend(kept)
    kept_inputs = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def resnet50_qdq() -> onnx.ModelProto:
    """``resnet50_float`` quantized: int8 activations, per-channel int8 weights."""
    return quantize_qdq(resnet50_float(), seed=8, activation="int8")


QDQ_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {"mobilenet_v2_qdq": mobilenet_v2_qdq}
ON_DEMAND_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {"resnet50_float": resnet50_float,
                                                              RESNET50_QDQ: resnet50_qdq}
MODEL_CACHE = Path(tempfile.gettempdir()) / "hetc_models"


def cached_model(name: str, cache_dir: Path = MODEL_CACHE) -> Path:
    """The path of on-demand model ``name`` (ON_DEMAND_MODELS) in ``cache_dir``, made there first if absent
    (written to a temporary name and renamed, so a concurrent reader never sees half a file)."""
    path = cache_dir / f"{name}.onnx"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(ON_DEMAND_MODELS[name]().SerializeToString(deterministic=True))
        partial.replace(path)
    return path


BIG_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {"transformer24": transformer24}

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "tiny_cnn": tiny_cnn,
    "mobilenet_v2": mobilenet_v2,
    "gpt_decoder": gpt_decoder,
    "moe": moe,
    "unet": unet,
    "llama_prefill": llama_prefill,
    "llama_decode": llama_decode,
    **QDQ_MODELS,
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


def describe(path: Path) -> str:
    """One summary line: file, node count, float parameter count, size, op mix."""
    model = onnx.load(str(path))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)
    ops = Counter(node.op_type for node in model.graph.node)
    mix = " ".join(f"{op}x{count}" for op, count in ops.most_common())
    return f"{path}: {len(model.graph.node)} nodes, {params:,d} params, {path.stat().st_size:,d} bytes; {mix}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "models",
                        help="directory for the committed zoo (default: models/)")
    parser.add_argument("--big", action="store_true",
                        help="also write transformer24.onnx (not committed: too big) into --big-out")
    parser.add_argument("--big-out", type=Path, default=Path(tempfile.gettempdir()) / "hetc_models",
                        help="directory for --big models (default: <tmp>/hetc_models)")
    parser.add_argument("--on-demand", action="store_true",
                        help="also make the on-demand models (the QDQ ResNet-50 and its float model, too big to "
                             f"commit) into --cache (default {MODEL_CACHE})")
    parser.add_argument("--cache", type=Path, default=MODEL_CACHE, help="directory for --on-demand models")
    args = parser.parse_args(argv)
    for path in write_models(args.out):
        print(describe(path))
    if args.big:
        for path in write_models(args.big_out, BIG_MODELS):
            print(describe(path))
    if args.on_demand:
        for name in ON_DEMAND_MODELS:
            print(describe(cached_model(name, args.cache)))
    return 0


# --- int8 QOperator model (issue 16): quantized by onnxruntime's own quantizer, not by hand -----------------
def mobilenet_v2_qoperator() -> onnx.ModelProto:
    """``mobilenet_v2`` (its seeded He-scaled weights) with Conv+BN folded by onnxruntime's pre-processing,
    then ``quantize_static`` in QOperator format: int8 activations and per-channel int8 weights, MinMax
    calibration on 8 seeded standard-normal inputs. QLinearConv carries the convolutions (ReLU6 is absorbed
    by the output ranges); residual Adds, the pool and the classifier become com.microsoft QLinearAdd,
    QLinearGlobalAveragePool and QGemm."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(16)
            self.feeds = iter([{"x": rng.standard_normal((1, 3, 96, 96)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        float_path, pre_path, out_path = (Path(tmp) / f for f in ("f.onnx", "pre.onnx", "q.onnx"))
        float_path.write_bytes(mobilenet_v2().SerializeToString())
        quant_pre_process(str(float_path), str(pre_path))
        quantize_static(str(pre_path), str(out_path), Calibration(), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        model = onnx.load(str(out_path))
    used = {node.domain for node in model.graph.node}
    kept = [o for o in model.opset_import if o.domain in used | {""}]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    model.graph.name = "mobilenet_v2_qoperator"
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


MODELS["mobilenet_v2_qoperator"] = mobilenet_v2_qoperator


if __name__ == "__main__":
    sys.exit(main())

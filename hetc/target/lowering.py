"""Lowerings a target asks for: a node that no accelerator of the target runs as written, rewritten into ops
one of them runs. Each is a rewrite rule (hetc.passes.patterns: a pattern, a condition, a replacement) made for
one target; ``optimize(graph, lowerings=lowering_rules(target))`` runs them after folding and before fusion,
so that the lowered node still takes its epilogue.

* ``strided_conv_as_space_to_depth``: a 2-D convolution whose stride exceeds every accelerator's
  ``max_stride`` (AlexNet's first layer: 11x11, stride 4, against the NPU's 1-3) becomes a space-to-depth
  rearrangement of its input (Reshape, Transpose, Reshape: each stride-by-stride block of pixels becomes
  channels) and a stride-1 convolution with ceil(kernel / stride) taps per axis over stride^2 times the
  channels, its weights rearranged the same way at compile time (taps beyond the kernel are zero). The two are
  equal term by term: output pixel (i, j) reads input pixels stride*i + k, which the rearranged input holds at
  block i + k // stride, channel k % stride. The price is the zero taps (AlexNet: 12x12 instead of 11x11 per
  channel, +19% MACs) and one pass over the input; Google's TPUs run ResNet's stride-2 stem this way.
  It applies only where an accelerator accepts the lowered convolution and none the original.
* ``transpose_at_lower_rank``: ``Reshape -> Transpose -> Reshape`` whose Transpose exceeds an accelerator's
  ``max_rank`` (ShuffleNet's channel shuffle: [N, g, C/g, H, W], perm (0, 2, 1, 3, 4), against the NPU's 4)
  becomes the same three ops with the input axes the permutation keeps together, in order, merged into one
  ([N, g, C/g, H*W], perm (0, 2, 1, 3)). The bytes are the same at every step (a Reshape is a C-order view),
  so the result is; what changes is that the NPU runs it next to the convolutions around it, instead of
  sending the activations to the DSP and back (ShuffleNet on ``edge-soc``: 16 shuffles, ~70 µs each).
  It applies where an accelerator accepts the lowered Transpose and not the original (on ``edge-soc`` the DSP
  takes rank 5, the NPU does not): the same bytes move either way, and more devices may move them.
* ``neg_as_mul``: a float ``Neg`` becomes ``Mul(x, -1)`` where an accelerator multiplies but has no negation
  (``multi-npu``'s NPUs: llama's rotary embedding negates half of Q and K per layer, which ran on the CPU at a
  4 µs launch each). The two are the same number bit for bit (a sign flip).
* ``layer_norm_as_rms_norm``: a float32 ``LayerNormalization`` over the last axis becomes ``MatMul(x, 1/d)`` (the
  mean of each row, on the matrix unit), ``Sub`` and a composite ``RMSNormalization`` with the LayerNorm's
  scale, then an ``Add`` of its bias, which fuses into the norm as its epilogue: the centred rows' RMS is their
  standard deviation, so the two are equal up to rounding (the mean is summed in another order). Where an
  accelerator runs the four and none the LayerNorm (``multi-npu``'s NPUs: the GPT decoder's nine norms ran on
  the CPU, and its activations crossed to it and back each time).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Collection

import numpy as np

from hetc.ir import FLOAT_DTYPES, Graph, Node, Value, np_dtype
from hetc.ir.fused import FUSED_DOMAIN, PARTS_ATTR
from hetc.passes.patterns import Match, Rule, pattern
from hetc.passes.rewrite import new_constant, unique_name
from hetc.target.capability import kernel_support


def lowering_rules(target: Any, devices: Collection[str] | None = None) -> list[Rule]:
    """The lowering rules for ``target`` (none when it has no accelerator), for its accelerators among
    ``devices`` when given (the one device of a ``single:`` strategy: a graph run on the CPU alone is not
    lowered for an NPU)."""
    accelerators = _accelerators(target, devices)
    if not accelerators:
        return []
    ids = _Ids()

    def where(m: Match) -> bool:
        conv = m.nodes["y"]
        if any(kernel_support(target, conv, d) for d in accelerators):
            return False
        lowered = _space_to_depth(conv, m.opset, ids, probe=True)
        return lowered is not None and any(kernel_support(target, lowered[-1], d) for d in accelerators)

    def build(graph: Graph, m: Match) -> list[Node]:
        lowered = _space_to_depth(m.nodes["y"], m.opset, ids, graph=graph)
        assert lowered is not None   # ``where`` built it already
        return lowered

    conv = pattern(("Conv", ["x", "?w", "?b?"], "y"), keep_anchor=True)

    def where_transpose(m: Match) -> bool:
        transpose = m.nodes["t"]
        shape, perm = _merged_axes(m.values["a"].shape, _perm(transpose))
        if m.opset < 5 or len(shape) >= len(m.values["a"].shape):
            return False
        probe = _transpose(m.anchor, shape, perm, m.output, ids, None)[1]
        return any(kernel_support(target, probe, d) and not kernel_support(target, transpose, d)
                   for d in accelerators)

    def build_transpose(graph: Graph, m: Match) -> list[Node]:
        shape, perm = _merged_axes(m.values["a"].shape, _perm(m.nodes["t"]))
        return _transpose(m.anchor, shape, perm, m.output, ids, graph)

    shuffle = pattern(("Reshape", ["x", "?s"], "a"), ("Transpose", ["a"], "t"), ("Reshape", ["t", "?s2"], "y"),
                      keep_anchor=True)

    def where_neg(m: Match) -> bool:
        neg = m.nodes["y"]
        if m.anchor.dtype not in FLOAT_DTYPES:   # -x and x * -1: one sign flip, signed zeros and NaNs alike
            return False
        probe = _negated(neg, None)
        return any(kernel_support(target, probe, d) and not kernel_support(target, neg, d) for d in accelerators)

    def where_layer_norm(m: Match) -> bool:
        norm = m.nodes["y"]
        if not _lowerable_layer_norm(norm) or any(kernel_support(target, norm, d) for d in accelerators):
            return False
        probes = _layer_norm_as_rms_norm(norm, ids, None)
        return any(all(kernel_support(target, n, d) for n in probes) for d in accelerators)

    return [Rule("strided_conv_as_space_to_depth", conv, where, build),
            Rule("transpose_at_lower_rank", shuffle, where_transpose, build_transpose),
            Rule("neg_as_mul", pattern(("Neg", ["x"], "y"), keep_anchor=True), where_neg,
                 lambda graph, m: [_negated(m.nodes["y"], graph)]),
            Rule("layer_norm_as_rms_norm", pattern(("LayerNormalization", ["x", "?scale", "?bias?"], "y"),
                                                   keep_anchor=True),
                 where_layer_norm, lambda graph, m: _layer_norm_as_rms_norm(m.nodes["y"], ids, graph))]


def _lowerable_layer_norm(norm: Node) -> bool:
    """A float32 LayerNormalization over the last axis alone, with a (d,) scale and bias and no Mean or
    InvStdDev output (the lowered nodes compute neither). Not float16: the norm computes in float32 and rounds
    once, the lowered nodes round the mean, the centred row and the result each (off by several ulps)."""
    x, scale = norm.inputs[0], norm.inputs[1]
    bias = norm.inputs[2] if len(norm.inputs) > 2 else None
    if x.dtype != "float32" or not x.shape or any(o is not None for o in norm.outputs[1:]):
        return False
    d = x.shape[-1]
    return (int(norm.attrs.get("axis", -1)) in (-1, len(x.shape) - 1) and scale.shape == (d,)
            and (bias is None or bias.shape == (d,)) and int(norm.attrs.get("stash_type", 1)) == 1)


def _layer_norm_as_rms_norm(norm: Node, ids: _Ids, graph: Graph | None) -> list[Node]:
    """``y = RMSNormalization(x - MatMul(x, 1/d), scale) + bias`` in place of ``y = LayerNormalization(x, scale,
    bias)``: the last node keeps the LayerNorm's output, the RMSNormalization its id (``graph`` None: a probe)."""
    x, scale = norm.inputs[0], norm.inputs[1]
    bias = norm.inputs[2] if len(norm.inputs) > 2 else None
    y, d = norm.outputs[0], x.shape[-1]

    def name(suffix: str) -> str:
        return f"{y.name}_{suffix}" if graph is None else unique_name(graph, f"{y.name}_{suffix}")

    rows = x.shape[:-1] + (1,)
    weight = _mean_weight(graph, d, x.dtype)
    mean = Value(name("mean"), x.dtype, rows)
    centred = Value(name("centred"), x.dtype, x.shape)
    normed = Value(name("normed"), x.dtype, x.shape) if bias is not None else y
    label = norm.name or y.name
    rms = Node(norm.id, "RMSNormalization", label, [centred, scale], [normed],
               {"axis": -1, "epsilon": float(norm.attrs.get("epsilon", 1e-5)), PARTS_ATTR: ["RMSNormalization"]},
               FUSED_DOMAIN)
    nodes = [Node(ids(graph), "MatMul", f"{label}_mean", [x, weight], [mean]),
             Node(ids(graph), "Sub", f"{label}_centre", [x, mean], [centred]), rms]
    if bias is not None:
        nodes.append(Node(ids(graph), "Add", f"{label}_bias", [normed, bias], [y]))
    return nodes


def _negated(neg: Node, graph: Graph | None) -> Node:
    """``Mul(x, -1)`` in place of ``Neg(x)``, with the Neg's id, name and output (``graph`` None: a probe)."""
    x = neg.inputs[0]
    name = f"{neg.name}_minus_one"
    minus_one = Value(name if graph is None else unique_name(graph, name), x.dtype, (),
                      const=np.asarray(-1, dtype=np_dtype(x.dtype)))
    return Node(neg.id, "Mul", neg.name, [x, minus_one], list(neg.outputs))


def _accelerators(target: Any, devices: Collection[str] | None) -> list[str]:
    return [d for d, dev in target.devices.items() if dev.kind != "cpu" and (devices is None or d in devices)]


def fusion_check(target: Any, devices: Collection[str] | None = None) -> Callable[[Node, Node], bool] | None:
    """The target's say on epilogue fusion (``optimize(graph, fusion_check=...)``): a part fuses into its base
    op only where every accelerator that runs the base as it is runs the fused node too. A Gelu, which neither
    preset's NPU has, would otherwise pull the GPT decoder's MLP projections off the NPU, onto the DSP or the
    CPU; left apart, the projection runs on the NPU and the Gelu where it can. None (always fuse) without
    accelerators (among ``devices`` when given, as for ``lowering_rules``)."""
    accelerators = _accelerators(target, devices)
    if not accelerators:
        return None

    def check(base: Node, fused: Node) -> bool:
        running = [d for d in accelerators if kernel_support(target, base, d)]
        return all(kernel_support(target, fused, d) for d in running)
    return check


def packs_biases(target: Any, devices: Collection[str] | None = None) -> bool:
    """Whether biases should travel in their weights (``optimize(graph, pack_biases=...)``; docs/frontend.md,
    "Packed biases"): only where some device (among ``devices`` when given) computes in a memory of its own,
    into which its weights are copied. Where every device computes in DRAM nothing is copied, and a packed
    weight only makes the CPU cut it apart on every run."""
    return any(target.home(d) != target.dram for d in target.devices if devices is None or d in devices)


def _mean_weight(graph: Graph | None, d: int, dtype: str) -> Value:
    """The (d, 1) column of 1/d a row mean multiplies by: one constant per graph, so that every norm of the
    same width reads the same bytes (one copy into each scratchpad, not one per norm)."""
    column = np.full((d, 1), 1.0 / d, dtype=np_dtype(dtype))
    name = f"row_mean_weight_{d}_{dtype}"
    if graph is None:
        return Value(name, dtype, (d, 1), const=column)
    found = graph.values.get(name)
    if found is not None and found.const is not None and np.array_equal(found.const, column) \
            and found.dtype == dtype:
        return found
    return new_constant(graph, name, column)   # (a model's own value of that name: this norm's own column)


def _perm(transpose: Node) -> list[int]:
    return [int(a) for a in transpose.attrs.get("perm", [])]


def _merged_axes(shape: tuple[int, ...], perm: list[int]) -> tuple[tuple[int, ...], list[int]]:
    """``shape`` with every run of consecutive axes that ``perm`` keeps together and in order merged into one,
    and the permutation of the merged axes. ``perm`` empty means reversed."""
    perm = perm or list(reversed(range(len(shape))))
    runs: list[list[int]] = []
    for axis in perm:                      # runs in output order
        if runs and runs[-1][-1] + 1 == axis:
            runs[-1].append(axis)
        else:
            runs.append([axis])
    by_input = sorted(runs, key=lambda run: run[0])
    merged = tuple(math.prod(shape[a] for a in run) for run in by_input)
    return merged, [by_input.index(run) for run in runs]


def _transpose(x: Value, shape: tuple[int, ...], perm: list[int], y: Value, ids: "_Ids",
               graph: Graph | None) -> list[Node]:
    """``y = Reshape(Transpose(Reshape(x, shape), perm), y.shape)`` as nodes (ids and names fresh in
    ``graph``; None: a probe for capability)."""
    def name(suffix: str) -> str:
        return f"{y.name}_{suffix}" if graph is None else unique_name(graph, f"{y.name}_{suffix}")

    def int64(suffix: str, data: tuple[int, ...]) -> Value:
        return Value(name(suffix), "int64", (len(data),), const=np.asarray(data, np.int64))

    merged = Value(name("merged"), x.dtype, shape)
    moved = Value(name("moved"), x.dtype, tuple(shape[a] for a in perm))
    return [Node(ids(graph), "Reshape", name("merge"), [x, int64("merged_shape", shape)], [merged]),
            Node(ids(graph), "Transpose", name("transpose"), [merged], [moved], {"perm": perm}),
            Node(ids(graph), "Reshape", name("unmerge"), [moved, int64("out_shape", y.shape)], [y])]


class _Ids:
    """Fresh node ids per graph: the nodes a sweep adds join the graph only at its end."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}

    def __call__(self, graph: Graph | None) -> int:
        if graph is None:
            return -1
        k = max(graph.next_node_id(), self.next.get(id(graph), 0))
        self.next[id(graph)] = k + 1
        return k


def _space_to_depth(conv: Node, opset: int, ids: _Ids, graph: Graph | None = None,
                    probe: bool = False) -> list[Node] | None:
    """The lowered nodes ending in the stride-1 Conv that writes ``conv``'s output (module docstring), or
    None when ``conv`` is not a plain 2-D convolution with a stride above 1 and a constant weight. With
    ``probe`` the nodes are only for asking capability (names and ids are not fresh)."""
    x, w = conv.inputs[0], conv.inputs[1]
    y = conv.outputs[0]
    attrs = conv.attrs
    strides = [int(s) for s in attrs.get("strides", [1, 1])]
    if (len(x.shape) != 4 or w.const is None or int(attrs.get("group", 1)) != 1 or max(strides) <= 1
            or any(int(d) != 1 for d in attrs.get("dilations", [1, 1]))
            or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
        return None
    n, c, h, wid = x.shape
    m_out, _, kh, kw = w.shape
    sh, sw = strides
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])] if attrs.get("auto_pad", "NOTSET") == "NOTSET" \
        else [0, 0, 0, 0]
    ho, wo = y.shape[2], y.shape[3]
    th, tw = math.ceil(kh / sh), math.ceil(kw / sw)          # taps per axis after the rearrangement
    hp, wp = sh * (ho + th - 1), sw * (wo + tw - 1)           # the padded input the blocks cover
    below, right = hp - h - pads[0], wp - wid - pads[1]       # < 0: rows or columns no output reads

    def name(suffix: str) -> str:
        base = f"{y.name}_{suffix}"
        return base if graph is None else unique_name(graph, base)

    def value(suffix: str, dtype: str, shape: tuple[int, ...], const: np.ndarray | None = None) -> Value:
        return Value(name(suffix), dtype, tuple(int(d) for d in shape), const=const)

    def int64(suffix: str, data: list[int]) -> Value:
        return value(suffix, "int64", (len(data),), np.asarray(data, np.int64))

    label = conv.name or y.name
    nodes: list[Node] = []
    current = x
    if below < 0 or right < 0:   # crop what no output reads (a view once Slice becomes a Region)
        ends = [h + min(0, below), wid + min(0, right)]
        cropped = value("cropped", x.dtype, (n, c, ends[0], ends[1]))
        if opset >= 10:
            inputs = [current, int64("crop_starts", [0, 0]), int64("crop_ends", ends), int64("crop_axes", [2, 3])]
            nodes.append(Node(ids(graph), "Slice", f"{label}/crop", inputs, [cropped]))
        else:
            nodes.append(Node(ids(graph), "Slice", f"{label}/crop", [current], [cropped],
                              {"starts": [0, 0], "ends": ends, "axes": [2, 3]}))
        current = cropped
    if pads[0] or pads[1] or below > 0 or right > 0:
        full = [0, 0, pads[0], pads[1], 0, 0, max(0, below), max(0, right)]
        padded = value("padded", x.dtype, (n, c, hp, wp))
        if opset >= 11:
            nodes.append(Node(ids(graph), "Pad", f"{label}/pad", [current, int64("pads", full)], [padded]))
        else:
            nodes.append(Node(ids(graph), "Pad", f"{label}/pad", [current], [padded], {"pads": full}))
        current = padded
    blocks = (n, c, hp // sh, sh, wp // sw, sw)
    split = value("blocks", x.dtype, blocks)
    nodes.append(Node(ids(graph), "Reshape", f"{label}/blocks", [current, int64("blocks_shape", list(blocks))],
                      [split]))
    moved_shape = (n, sh, sw, c, hp // sh, wp // sw)
    moved = value("block_channels", x.dtype, moved_shape)
    nodes.append(Node(ids(graph), "Transpose", f"{label}/space_to_depth", [split], [moved],
                      {"perm": [0, 3, 5, 1, 2, 4]}))
    depth_shape = (n, sh * sw * c, hp // sh, wp // sw)
    depth = value("space_to_depth", x.dtype, depth_shape)
    nodes.append(Node(ids(graph), "Reshape", f"{label}/channels", [moved, int64("channels_shape", list(depth_shape))],
                      [depth]))
    weight = None if probe else _rearranged(np.asarray(w.const), sh, sw, th, tw)
    lowered_w = value("weight_s2d", w.dtype, (m_out, sh * sw * c, th, tw), weight)
    conv_attrs = {k: v for k, v in attrs.items() if k not in ("strides", "pads", "auto_pad", "dilations")}
    conv_attrs.update(kernel_shape=[th, tw], strides=[1, 1], pads=[0, 0, 0, 0])
    nodes.append(Node(conv.id if graph is not None else -1, "Conv", conv.name, [depth, lowered_w, *conv.inputs[2:]],
                      [y], conv_attrs))
    return nodes


def _rearranged(w: np.ndarray, sh: int, sw: int, th: int, tw: int) -> np.ndarray:
    """``w`` [M, C, kh, kw] as the weight of the stride-1 convolution over the space-to-depth input:
    [M, sh*sw*C, th, tw], channel (p*sw + q)*C + c, tap (a, b) = w[:, c, a*sh + p, b*sw + q] (zero past the
    kernel)."""
    m, c, kh, kw = w.shape
    padded = np.zeros((m, c, th * sh, tw * sw), w.dtype)
    padded[:, :, :kh, :kw] = w
    blocks = padded.reshape(m, c, th, sh, tw, sw).transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(blocks.reshape(m, sh * sw * c, th, tw))

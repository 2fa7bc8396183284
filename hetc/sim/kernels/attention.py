"""Attention (ONNX opset 23, 4-D Q, K, V) as the NPU/DSP run it: tiled over the keys with an online softmax.

For each tile of ``kv_tile`` keys the kernel computes the tile's scores, updates each query row's running
maximum ``m`` and running sum ``l`` of exponentials, rescales the output accumulator by ``exp(m_old - m_new)``
and adds the tile's probabilities times its values; the output is the accumulator over ``l``. The scores of
one tile are all that ever exist (``B x Hq x Sq x kv_tile``), never the ``Sq x Skv`` matrix, which is what
lets a scratchpad hold attention over long sequences (hetc.target.tiling cuts a node whose Q, K, V and output
do not fit along heads, batch and query rows).
Grouped-query heads: query head h reads K/V head ``h // (Hq / Hkv)``. ``is_causal`` masks key j for query i
when j > i (upper-left, as the spec and onnxruntime align it); a boolean mask keeps the keys that are true,
a float mask is added to the scaled scores.
"""
from __future__ import annotations

import numpy as np

from hetc.sim.kernels.registry import KernelCall, kernel
from hetc.target.ops import attention_limitation

# Keys per step of the online softmax: a step's scores (B x Hq x Sq x KV_TILE) are the only ones that exist.
KV_TILE = 128


def online_softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
                             scale: float, causal: bool, kv_tile: int) -> np.ndarray:
    """``softmax(scale * Q K^T + mask) V`` over key tiles of ``kv_tile``, without the full score matrix."""
    batch, q_heads, q_len, _ = q.shape
    kv_heads, kv_len, v_head = k.shape[1], k.shape[2], v.shape[3]
    group = q_heads // kv_heads
    dtype = np.result_type(q.dtype, np.float32)
    qg = q.reshape(batch, kv_heads, group, q_len, q.shape[3]).astype(dtype, copy=False)
    kg, vg = k[:, :, None].astype(dtype, copy=False), v[:, :, None].astype(dtype, copy=False)
    if mask is not None:   # broadcast once to (B, Hkv, G, Sq, Skv) as a view
        mask = np.broadcast_to(mask, (batch, q_heads, q_len, kv_len)).reshape(batch, kv_heads, group, q_len,
                                                                                kv_len)
    running_max = np.full((batch, kv_heads, group, q_len, 1), -np.inf, dtype)
    running_sum = np.zeros((batch, kv_heads, group, q_len, 1), dtype)
    acc = np.zeros((batch, kv_heads, group, q_len, v_head), dtype)
    rows = np.arange(q_len)[:, None]
    for start in range(0, kv_len, max(1, kv_tile)):
        stop = min(kv_len, start + max(1, kv_tile))
        scores = np.matmul(qg, np.swapaxes(kg[:, :, :, start:stop], -1, -2)) * dtype.type(scale)
        if causal:
            scores = np.where(np.arange(start, stop)[None, :] > rows, -np.inf, scores)
        if mask is not None:
            tile = mask[..., start:stop]
            scores = np.where(tile, scores, -np.inf) if tile.dtype == np.bool_ else scores + tile
        new_max = np.maximum(running_max, scores.max(axis=-1, keepdims=True))
        safe = np.where(np.isneginf(new_max), 0, new_max)   # a row with every key masked so far
        probs = np.exp(scores - safe)
        rescale = np.exp(running_max - safe)
        running_sum = running_sum * rescale + probs.sum(axis=-1, keepdims=True)
        acc = acc * rescale + np.matmul(probs, vg[:, :, :, start:stop])
        running_max = new_max
    # A query whose every key is masked attends to nothing: its output is 0 (the spec's rule; its
    # accumulator is 0 too).
    out = acc / np.where(running_sum == 0, 1, running_sum)
    return out.reshape(batch, q_heads, q_len, v_head)


@kernel("Attention")
def attention(call: KernelCall) -> np.ndarray:
    q, k, v = call.required(0), call.required(1), call.required(2)
    reason = attention_limitation([x.ndim for x in (q, k, v)], len(call.inputs), len(call.outputs),
                                  call.outputs[0][0], call.attrs)
    if reason is not None:
        call.fail(reason)
    if q.shape[1] % k.shape[1]:
        call.fail(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} key/value heads")
    scale = call.attr("scale", None)
    scale = 1.0 / np.sqrt(q.shape[3]) if scale is None else float(scale)
    out = online_softmax_attention(q, k, v, call.input(3), scale, bool(call.attr("is_causal", 0)), KV_TILE)
    return out.astype(q.dtype, copy=False)

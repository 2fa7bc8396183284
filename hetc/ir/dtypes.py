"""Element types. The IR names a dtype by a short string (numpy's spelling where numpy has one) so that
artifacts serialise as plain JSON; these helpers convert to and from ONNX and numpy."""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper

# Sub-byte types are packed two per byte by ONNX.
_PACKED_4BIT = {"int4", "uint4", "float4e2m1"}

_ONNX_TO_NAME: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
    TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
    TensorProto.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    TensorProto.FLOAT8E5M2: "float8e5m2",
    TensorProto.FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4",
}
for _code_name, _dtype_name in (("FLOAT4E2M1", "float4e2m1"), ("FLOAT8E8M0", "float8e8m0"),
                                ("INT2", "int2"), ("UINT2", "uint2")):
    if hasattr(TensorProto, _code_name):  # newer onnx releases only
        _ONNX_TO_NAME[getattr(TensorProto, _code_name)] = _dtype_name
_NAME_TO_ONNX = {v: k for k, v in _ONNX_TO_NAME.items()}

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


def dtype_from_onnx(elem_type: int) -> str:
    """The IR name of an ONNX ``TensorProto`` element type."""
    try:
        return _ONNX_TO_NAME[elem_type]
    except KeyError:
        raise ValueError(f"unsupported ONNX element type {elem_type}") from None


def dtype_to_onnx(name: str) -> int:
    """The ONNX ``TensorProto`` element type of an IR dtype name."""
    return _NAME_TO_ONNX[name]


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds values of this IR dtype (object for strings)."""
    if name == "string":
        return np.dtype(object)
    return np.dtype(helper.tensor_dtype_to_np_dtype(_NAME_TO_ONNX[name]))


def dtype_from_numpy(dtype: np.dtype) -> str:
    """The IR name of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(object) or dtype.kind in "US":
        return "string"
    return dtype_from_onnx(helper.np_dtype_to_tensor_dtype(dtype))


def itemsize(name: str) -> float:
    """Bytes per element; 0.5 for the packed 4-bit types, 8 (a pointer) for strings."""
    if name in _PACKED_4BIT:
        return 0.5
    if name in ("int2", "uint2"):
        return 0.25
    if name == "string":
        return 8
    return np_dtype(name).itemsize


def nbytes(name: str, shape: tuple[int, ...]) -> int:
    """Storage size in bytes of a dense tensor of this dtype and static shape."""
    return int(math.ceil(math.prod(shape) * itemsize(name)))


# Bits per element of the sub-byte types. numpy (ml_dtypes) holds one element per byte; memory and ONNX pack
# them, the first element in the lowest bits.
_SUB_BYTE_BITS = {**dict.fromkeys(_PACKED_4BIT, 4), "int2": 2, "uint2": 2}


def to_storage(array: np.ndarray, name: str) -> np.ndarray:
    """The bytes of ``array`` as laid out in memory (``nbytes(name, shape)`` of them), as a flat uint8 array:
    a view for whole-byte types, packed for the sub-byte ones."""
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    bits = _SUB_BYTE_BITS.get(name)
    if bits is None:
        return raw
    per_byte = 8 // bits
    groups = np.zeros(-(-raw.size // per_byte) * per_byte, np.uint8)
    groups[:raw.size] = raw & np.uint8((1 << bits) - 1)
    groups = groups.reshape(-1, per_byte)
    packed = np.zeros(groups.shape[0], np.uint8)
    for i in range(per_byte):
        packed |= groups[:, i] << np.uint8(bits * i)
    return packed


def from_storage(raw: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor stored in the flat uint8 ``raw``: a view for whole-byte types, unpacked (a copy) for the
    sub-byte ones."""
    bits = _SUB_BYTE_BITS.get(name)
    if bits is None:
        return raw.view(np_dtype(name)).reshape(shape)
    mask = np.uint8((1 << bits) - 1)
    parts = [(raw >> np.uint8(bits * i)) & mask for i in range(8 // bits)]
    elements = np.stack(parts, axis=1).reshape(-1)[:math.prod(shape)]
    return elements.view(np_dtype(name)).reshape(shape)

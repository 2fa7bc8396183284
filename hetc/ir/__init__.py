"""The typed graph IR shared by every stage."""
from hetc.ir.dtypes import (FLOAT_DTYPES, INT_DTYPES, dtype_from_numpy, dtype_from_onnx, dtype_to_onnx,
                            itemsize, nbytes, np_dtype)
from hetc.ir.graph import SUBGRAPH_OPS, Graph, Node, Value
from hetc.ir.host import (HostType, conform_host_value, describe_host_value, host_type_from_proto,
                          parse_host_type, tensor_host_type)
from hetc.ir.immediates import IMMEDIATE_MAX_BYTES, is_immediate
from hetc.ir.onnx_export import EXPORT_IR_VERSION, to_onnx

__all__ = ["Graph", "Node", "Value", "SUBGRAPH_OPS", "HostType", "host_type_from_proto", "parse_host_type",
           "conform_host_value", "describe_host_value",
           "tensor_host_type", "is_immediate", "IMMEDIATE_MAX_BYTES", "to_onnx", "EXPORT_IR_VERSION", "dtype_from_onnx",
           "dtype_to_onnx", "dtype_from_numpy", "np_dtype", "itemsize", "nbytes", "FLOAT_DTYPES", "INT_DTYPES"]

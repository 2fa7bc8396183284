"""hetc.frontend: ONNX -> IR (load, check, opset conversion, shape inference, shape overrides)."""
from hetc.frontend.importer import import_model, load_onnx
from hetc.frontend.loader import MAX_OPSET, MIN_OPSET
from hetc.frontend.opsets import NEWEST_OPSET
from hetc.frontend.overrides import parse_dim_overrides, parse_shape_overrides

__all__ = ["load_onnx", "import_model", "parse_shape_overrides", "parse_dim_overrides", "MIN_OPSET",
           "MAX_OPSET", "NEWEST_OPSET"]

"""Inputs whose declared size is -1 (old paddle2onnx writes that for a dynamic dimension, and onnxruntime
accepts any size there): the frontend asks for an override, validation accepts any size."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hetc.errors import ShapeError
from hetc.frontend import import_model
from hetc.validate import check_inputs, input_specs


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    x.type.tensor_type.shape.dim[0].dim_value = -1
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_a_negative_size_is_dynamic_and_the_error_names_a_valid_override() -> None:
    with pytest.raises(ShapeError, match=r"--shape x=1x4\b"):
        import_model(_model())
    graph = import_model(_model(), shapes={"x": (3, 4)})
    assert tuple(graph.inputs[0].shape) == (3, 4)


def test_validation_inputs_accept_any_size_where_the_model_says_minus_one() -> None:
    assert input_specs(_model())[0].shape == (None, 4)
    x = np.zeros((3, 4), np.float32)
    assert check_inputs({"x": x}, _model())["x"] is x

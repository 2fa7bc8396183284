"""Reading and normalising an ONNX model before it becomes IR: file errors, external data, the checker,
inlining of model-local functions and conversion into the opset range hetc supports."""
from __future__ import annotations

from pathlib import Path

import onnx
import onnx.inliner
import onnx.version_converter
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from hetc.errors import ModelError

# The default-domain opsets hetc accepts. onnxruntime 1.31 (the CPU fallback and the reference every
# result is validated against) only guarantees opset >= 7 and its loader rejects models stamped above 26;
# every node conformance case stamped 7..26 builds a session there, those stamped 27/28 do not.
MIN_OPSET = 7
MAX_OPSET = 26
DEFAULT_DOMAINS = ("", "ai.onnx")


def read_model_file(path: str | Path) -> onnx.ModelProto:
    """Parse an ONNX file (and its external data files, looked up next to it)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist; check the path")
    if path.is_dir():
        raise ModelError(f"'{path}' is a directory, not an ONNX file; pass the .onnx file inside it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as error:
        raise ModelError(f"'{path}' is not a readable ONNX model ({_first_line(error)}); "
                         "the file is truncated or not an ONNX protobuf: re-export it") from error
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ModelError(f"'{path}' is not an ONNX model (no graph or IR version in it); "
                         "pass a file written by an ONNX exporter")
    load_external_data(model, path.parent)
    return model


def load_external_data(model: onnx.ModelProto, base_dir: str | Path | None) -> None:
    """Read tensors stored in external files into ``model``, in place."""
    external = [t for t in external_data_helper._get_all_tensors(model)  # noqa: SLF001 - onnx's own walk
                if external_data_helper.uses_external_data(t)]
    if not external:
        return
    if base_dir is None:
        raise ModelError(f"the model keeps {len(external)} tensor(s) in external data files; "
                         "pass base_dir (the folder that holds them) or load it with load_onnx(path)")
    for tensor in external:
        info = external_data_helper.ExternalDataInfo(tensor)
        if not (Path(base_dir) / info.location).is_file():
            raise ModelError(f"external data file '{info.location}' of tensor '{tensor.name}' is missing "
                             f"from '{base_dir}'; copy it next to the model")
    try:
        external_data_helper.load_external_data_for_model(model, str(base_dir))
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise ModelError(f"cannot read external data from '{base_dir}': {_first_line(error)}") from error


# Protobuf cannot serialise more than this, and onnx's in-memory checker and shape inference need to.
_PROTOBUF_LIMIT = 2**31 - 1


def check_model(model: onnx.ModelProto) -> None:
    """Run the ONNX checker, turning its verdict into a ModelError."""
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise ModelError(f"the model is {model.ByteSize() / 2**30:.1f} GiB with its weights; hetc handles models "
                         "up to 2 GiB (the protobuf limit onnx's checker and shape inference work within)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ModelError(f"the model fails the ONNX checker: {_first_line(error)}; "
                         "fix or re-export the model") from error


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace calls of model-local functions by their bodies (hetc has no notion of a function)."""
    if not model.functions:
        return model
    try:
        inlined = onnx.inliner.inline_local_functions(model)
    except Exception as error:  # noqa: BLE001 - the C++ inliner raises plain RuntimeErrors
        raise ModelError(f"cannot inline the model's local functions: {_first_line(error)}") from error
    del inlined.functions[:]
    return inlined


def default_opset(model: onnx.ModelProto) -> int | None:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    return max(versions) if versions else None


def convert_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Bring the default-domain opset into MIN_OPSET..MAX_OPSET with onnx's version converter."""
    version = default_opset(model)
    if version is None or MIN_OPSET <= version <= MAX_OPSET:
        return model
    target = MIN_OPSET if version < MIN_OPSET else MAX_OPSET
    try:
        converted = onnx.version_converter.convert_version(model, target)
    except Exception as error:  # noqa: BLE001 - the converter raises RuntimeError/ConvertError freely
        raise ModelError(f"unsupported opset: the model uses opset {version}, hetc supports "
                         f"{MIN_OPSET}..{MAX_OPSET}, and converting it to {target} failed "
                         f"({_first_line(error)}); re-export the model with an opset in that range") from error
    return converted


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines() or [type(error).__name__])[0][:300] if text else type(error).__name__

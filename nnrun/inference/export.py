"""`nnrun export`: write a run's model for use outside nnrun, then prove the copy is faithful.

The export takes the raw inputs the data set gives (uint8 images of the data set's size, int
token ids): casting, the techniques' eval-time layers (e.g. progressive resizing's eval_size)
and the model's own preprocessing layers (rescale, normalise with the training statistics) are
all inside it. export.json records what a user needs beside the file: class names in index
order, the input shape and dtype, and the preprocessing statistics.

The export is reloaded the way a user would (keras: `keras.saving.load_model`; saved_model:
`tf.saved_model.load(...).serve`; onnx: an onnxruntime session; litert: the LiteRT
interpreter; both through Keras' `model.export`, optional extras) and its outputs on raw inputs stored in
RUN_DIR/exported/reference.npz are compared with the trained model's outputs through the
evaluation pipeline. The reference is written on the first export and reused afterwards.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from nnrun.engine.pipeline import eval_layers
from nnrun.rundir import RunDir, atomic_write, now_iso
from nnrun.errors import RunFailed, UsageError

FORMATS = {"keras": "model.keras", "saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite"}
# What each format needs beyond TensorFlow and Keras (the optional extras), checked before any work.
NEEDS = {"onnx": (("tf2onnx", "onnx", "onnxruntime"), "nnrun[onnx]"), "litert": (("ai_edge_litert",), "nnrun[litert]")}
REFERENCE = "reference.npz"
NUM_REFERENCE = 8
# Float32 logits through a different runtime (graph vs eager, fused kernels) may differ in the
# last bits; a real mismatch (wrong weights, missing layer) is orders of magnitude larger.
RTOL, ATOL = 1e-4, 1e-5


def _inputs(x) -> list[np.ndarray]:
    return [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]


def _call(fn, inputs: list[np.ndarray]) -> np.ndarray:
    """One positional argument: the tensor, or the list of tensors for multi-input models."""
    out = fn(inputs[0] if len(inputs) == 1 else inputs)
    return np.asarray(out.numpy() if hasattr(out, "numpy") else out)


def raw_input_model(model, facts, techniques):
    """`model` wrapped to take raw inputs: Input(data shape, data dtype) -> cast -> eval layers ->
    model. Returned unchanged when the raw inputs already are its inputs (float data, token ids)."""
    import keras
    from keras import ops

    layers = eval_layers(techniques)
    integer_images = facts.is_image and "int" in facts.input_dtype
    if not layers and not integer_images:
        return model
    inputs = keras.Input(shape=facts.input_shape, dtype=facts.input_dtype, name="raw_image")
    x = ops.cast(inputs, "float32") if integer_images else inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_raw_inputs")


def _reference(run: RunDir, cfg, model, techniques, directory: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Stored raw inputs and the trained model's outputs on them through the evaluation pipeline
    (created on first use)."""
    path = directory / REFERENCE
    if path.is_file() or path.is_symlink():
        with np.load(io.BytesIO(run.read_file(path.relative_to(run.path))), allow_pickle=False) as ref:
            names = sorted((k for k in ref.files if k.startswith("input_")), key=lambda k: int(k.split("_")[1]))
            return [ref[k] for k in names], ref["outputs"]
    import tensorflow as tf

    from nnrun.engine import build, pipeline

    data = build.build_data(cfg)
    split = next(data.splits[s] for s in ("val", "test", "train") if s in data.splits)
    inputs = _inputs(split.head(NUM_REFERENCE)[0])
    outputs = _call(lambda x: model(pipeline.eval_inputs(tf, tf.constant(x), techniques), training=False), inputs)
    buffer = io.BytesIO()
    np.savez(buffer, outputs=outputs, **{f"input_{i}": a for i, a in enumerate(inputs)})
    atomic_write(path, buffer.getvalue())
    return inputs, outputs


def check_runtime(fmt: str) -> None:
    """UsageError naming the extra to install when a format's packages are missing."""
    import importlib.util

    modules, extra = NEEDS.get(fmt, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--format {fmt} needs {', '.join(missing)}: pip install '{extra}'")


def _write_and_reload(model, fmt: str, target: Path, inputs: list[np.ndarray]):
    """Write the model to `target`, reload it from disk with the format's own runtime (Keras,
    TensorFlow, onnxruntime, the LiteRT interpreter), return a callable on inputs. Keras' ONNX
    and LiteRT exports need a model that has been called: it is, on the reference inputs."""
    import keras

    if fmt in ("onnx", "litert"):
        _call(lambda x: model(x, training=False), inputs)

    if fmt == "keras":
        model.save(target)
        reloaded = keras.saving.load_model(target, compile=False, safe_mode=True)
        return lambda x: reloaded(x, training=False)
    if fmt == "onnx":
        model.export(str(target), format="onnx", verbose=False)
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - tf2onnx kept an op onnxruntime cannot run
            raise UsageError(f"--format onnx cannot convert this model: {_converter_reason(exc)}; "
                             "nothing was exported") from None
        names = [i.name for i in session.get_inputs()]
        if len(names) != len(model.inputs):  # tf2onnx fell back to variables as graph inputs
            layers = sorted({n.split("/")[-3].rsplit("_", 1)[0] for n in names[len(model.inputs):] if n.count("/") >= 2})
            raise UsageError(f"--format onnx cannot convert this model: tf2onnx could not freeze the variables of "
                             f"{', '.join(layers) or 'some layers'} and made them graph inputs (normalize: train "
                             "or fixed does this); nothing was exported")
        return lambda x: session.run(None, dict(zip(names, x if isinstance(x, list) else [x])))[0]
    if fmt == "litert":
        try:
            model.export(str(target), format="litert", verbose=False)
        except Exception as exc:  # noqa: BLE001 - the converter's error, as one line that names the op
            raise UsageError(f"--format litert cannot convert this model: {_converter_reason(exc)}; "
                             "nothing was exported") from None
        return _litert_runner(target)
    model.export(str(target), format="tf_saved_model", verbose=False)
    import tensorflow as tf

    reloaded = tf.saved_model.load(str(target))
    return lambda x: reloaded.serve(x)  # the closure keeps the loaded object (and its variables) alive


def _converter_reason(exc: BaseException) -> str:
    """What the LiteRT converter or onnxruntime could not do: the TensorFlow ops the format has
    no equivalent for (e.g. ScaleAndTranslate, an antialiased resize such as progressive
    resizing's eval_size), or the error's first line."""
    import re

    text = str(exc)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))  # LiteRT
    ops = ops or sorted(set(re.findall(r'In Node, \("[^"]*", (\w+),', text)))  # onnxruntime
    if ops:
        return (f"TensorFlow's {', '.join(ops)} op has no equivalent in the format"
                + (" (an antialiased resize, e.g. progressive resizing's eval_size)" if "ScaleAndTranslate" in ops else ""))
    from nnrun.errors import first_line

    return f"{type(exc).__name__}: {first_line(exc)[:200]}"


def _litert_runner(path: Path):
    """The .tflite file in the LiteRT interpreter (ai_edge_litert: tf.lite.Interpreter is
    deprecated), resized to each batch; inputs in the order of the model's input details."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def run(x):
        arrays = x if isinstance(x, list) else [x]
        details = sorted(interpreter.get_input_details(), key=lambda d: d["index"])
        for detail, array in zip(details, arrays):
            interpreter.resize_tensor_input(detail["index"], array.shape)
        interpreter.allocate_tensors()
        for detail, array in zip(details, arrays):
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()

    return run


def export(run_dir: str | Path, fmt: str = "keras", checkpoint: str = "best") -> dict:
    """Export RUN_DIR's checkpoint as `fmt` under RUN_DIR/exported/; RunFailed if the reloaded
    export's outputs on raw inputs differ from the trained model's (nothing is kept then)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    check_runtime(fmt)
    from nnrun.inference.open_run import open_run

    opened = open_run(run_dir, checkpoint)
    run, cfg = opened.run, opened.cfg
    directory = run.own_dir("exported")  # a linked folder is refused before any work
    opened.setup_runtime()
    facts = opened.facts
    techniques = opened.eval_techniques()
    model = opened.load_model()
    inputs, expected = _reference(run, cfg, model, techniques, directory)
    target = directory / FORMATS[fmt]
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".export-"))
    try:
        predict = _write_and_reload(raw_input_model(model, facts, techniques), fmt, staging / FORMATS[fmt], inputs)
        got = _call(predict, inputs)
        diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.shape == expected.shape else None
        if diff is None or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            shown = "shape " + str(got.shape) + " vs " + str(expected.shape) if diff is None else f"max |diff| {diff:.3g}"
            raise RunFailed(f"exported {fmt} model does not reproduce the trained model's outputs on "
                            f"{len(expected)} stored raw inputs ({shown}); nothing was exported")
        if target.is_dir():
            shutil.rmtree(target)
        (staging / FORMATS[fmt]).replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = {"format": fmt, "path": str(target), "checkpoint": checkpoint, "checked_inputs": len(expected),
              "max_abs_diff": diff, "exported_at": now_iso(),
              "inputs": {"shape": [None, *facts.input_shape], "dtype": facts.input_dtype,
                         "eval_layers": [layer.name for layer in eval_layers(techniques)]},
              "outputs": "logits" if facts.task == "classification" else "embeddings"}
    manifest = directory / "export.json"
    try:
        exports = json.loads(manifest.read_text())
    except (OSError, ValueError):
        exports = {}
    exports.update({"class_names": facts.class_names, "input_shape": list(facts.input_shape),
                    "input_dtype": facts.input_dtype, "preprocess": facts.preprocess, "task": facts.task})
    exports[fmt] = result
    atomic_write(manifest, json.dumps(exports, indent=2) + "\n")
    return result


"""`nnrun export`: the exported model reloads and gives the trained model's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli, train_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("export"), "train.epochs=1", "data.params.num_train=256",
                      "model.params.stages=[4, 8]")


def reference(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run / "exported" / "reference.npz") as ref:
        return ref["input_0"], ref["outputs"]


def test_keras_export_round_trip(run):
    res = run_cli("export", str(run), "--format", "keras")
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path == run / "exported" / "model.keras" and path.is_file()
    assert "outputs match on 8 stored raw inputs" in res.stderr
    inputs, outputs = reference(run)
    assert inputs.shape == (8, 16, 16, 3) and outputs.shape == (8, 4)
    import keras

    # the stored outputs are the trained model's, and the export reproduces them
    trained = keras.saving.load_model(run / "checkpoints" / "best.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(trained(inputs, training=False)), outputs, rtol=1e-5, atol=1e-6)
    exported = keras.saving.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(exported(inputs, training=False)), outputs, rtol=1e-5, atol=1e-6)
    assert np.ptp(outputs) > 0  # not a constant output that would match anything
    manifest = json.loads((run / "exported" / "export.json").read_text())
    assert manifest["keras"]["checked_inputs"] == 8 and manifest["keras"]["max_abs_diff"] <= 1e-5


def test_saved_model_export_round_trip(run):
    res = run_cli("export", str(run), "--format", "saved_model")
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path == run / "exported" / "saved_model" and (path / "saved_model.pb").is_file()
    import tensorflow as tf

    inputs, outputs = reference(run)  # the same stored inputs as the keras export used
    loaded = tf.saved_model.load(str(path))  # keep a reference: its variables live as long as it does
    served = loaded.serve(tf.constant(inputs)).numpy()
    np.testing.assert_allclose(served, outputs, rtol=1e-4, atol=1e-5)
    assert set(json.loads((run / "exported" / "export.json").read_text())) >= {"saved_model"}


def test_export_fails_when_outputs_do_not_match(run):
    inputs, outputs = reference(run)
    before = (run / "exported" / "model.keras").stat().st_mtime_ns if (run / "exported" / "model.keras").exists() else None
    np.savez(run / "exported" / "reference.npz", input_0=inputs, outputs=outputs + 0.5)  # tampered expectation
    res = run_cli("export", str(run), "--format", "keras")
    assert res.returncode == 1
    assert res.stderr.strip().startswith("run failed: exported keras model does not reproduce the trained model's "
                                         "outputs on 8 stored raw inputs (max |diff| 0.5")
    after = (run / "exported" / "model.keras").stat().st_mtime_ns if (run / "exported" / "model.keras").exists() else None
    assert after == before  # a failed export replaces nothing
    assert not list((run / "exported").glob(".export-*"))
    np.savez(run / "exported" / "reference.npz", input_0=inputs, outputs=outputs)


def test_export_rejects_an_unknown_format(run):
    res = run_cli("export", str(run), "--format", "tflite")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --format must be one of keras, saved_model, onnx, litert, got 'tflite'"


def test_a_format_without_its_runtime_names_the_extra(monkeypatch):
    import importlib.util

    from nnrun.errors import UsageError
    from nnrun.inference import export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UsageError, match=r"^--format onnx needs onnxruntime: pip install 'nnrun\[onnx\]'$"):
        export.check_runtime("onnx")
    export.check_runtime("litert")  # installed with the dev extra

"""Using finished runs outside training: exports that stand alone (raw inputs, preprocessing and
eval-time resizing inside, class names beside) and `nnrun predict` on new files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

COLOURS = {"blue": (60, 60, 170), "green": (60, 150, 60), "red": (170, 60, 60)}

FOLDER_CONFIG = """\
name: folder
seed: 0
data:
  dataset: image_folder
  params: {{path: {root}, image_size: 16, normalize: train}}
  batch_size: 16
model:
  name: resnet
  params: {{stages: [8, 16], blocks_per_stage: 1}}
optimizer: {{name: adam, learning_rate: 0.01}}
train:
  epochs: 2
  techniques:
    progressive_resizing: {{sizes: [12, 16], epochs: [1, 1], eval_size: 20}}
runtime: {{runs_root: {runs}, deterministic: true}}
"""

SEQUENCE_CONFIG = """\
name: seq
seed: 0
data:
  dataset: sequences
  params: {{num_train: 512, num_val: 200, vocab_size: 12, min_length: 4, max_length: 12}}
  batch_size: 32
model:
  name: transformer
  params: {{dim: 16, num_layers: 1, num_heads: 2, mlp_dim: 32, pooling: attention}}
optimizer: {{name: adam, learning_rate: 0.003}}
train: {{epochs: 3}}
runtime: {{runs_root: {runs}, deterministic: true}}
"""


def make_noisy_folder(root: Path, train: int = 48, val: int = 20) -> Path:
    """Three colour classes under heavy noise (not every image is easy), PNG and JPEG of varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for part, count in (("train", train), ("val", val)):
        for name, colour in COLOURS.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(14, 30, 2)
                pixels = np.clip(np.array(colour) + rng.normal(0, 70, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def train(tmp: Path, text: str) -> Path:
    config = tmp / "config.yaml"
    config.write_text(text)
    res = run_cli("train", str(config), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("folder")
    root = make_noisy_folder(tmp / "images")
    return train(tmp, FOLDER_CONFIG.format(root=root, runs=tmp / "runs")), root


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sequences")
    return train(tmp, SEQUENCE_CONFIG.format(runs=tmp / "runs"))


def raw_split(run: Path, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """The split's raw inputs (uint8 images / int token ids) and labels, as the data set gives them."""
    from nnrun.engine.build import build_data
    from nnrun.rundir import RunDir

    part = build_data(RunDir.open(run).read_config()).split(split)
    return part.x, part.y


STANDALONE = """\
import json, sys
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1])
info = json.load(open(sys.argv[2]))
data = np.load(sys.argv[3])
logits = np.asarray(model(data["x"]))
names = [info["class_names"][i] for i in logits.argmax(axis=1)]
truth = [info["class_names"][i] for i in data["y"]]
print(json.dumps({"accuracy": float(np.mean([a == b for a, b in zip(names, truth)])),
                  "nnrun_imported": any(m.split(".")[0] == "nnrun" for m in sys.modules)}))
"""


def standalone_accuracy(tmp: Path, run: Path) -> dict:
    """Accuracy of RUN_DIR/exported/model.keras on the raw val split, in a Python process that
    never imports nnrun, class names from export.json."""
    x, y = raw_split(run)
    np.savez(tmp / "val.npz", x=x, y=y)
    (tmp / "standalone.py").write_text(STANDALONE)
    done = subprocess.run([sys.executable, str(tmp / "standalone.py"), str(run / "exported" / "model.keras"),
                           str(run / "exported" / "export.json"), str(tmp / "val.npz")],
                          capture_output=True, text=True, cwd=tmp, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_image_folder_export_takes_raw_uint8_and_carries_its_preprocessing(folder_run, tmp_path):
    run, _ = folder_run
    res = run_cli("export", str(run), "--checkpoint", "last")
    assert res.returncode == 0, res.stderr
    assert "outputs match on 8 stored raw inputs" in res.stderr
    info = json.loads((run / "exported" / "export.json").read_text())
    record = json.loads((run / "run.json").read_text())
    assert info["class_names"] == ["blue", "green", "red"] == record["data"]["class_names"]
    assert info["input_shape"] == [16, 16, 3] and info["input_dtype"] == "uint8"
    stats = info["preprocess"]
    assert stats["rescale"] == pytest.approx(1 / 255) and len(stats["mean"]) == 3 and len(stats["std"]) == 3
    assert stats == record["data"]["preprocess"]
    assert info["keras"]["inputs"]["eval_layers"] == ["eval_resize"]  # progressive resizing's eval_size 20
    with np.load(run / "exported" / "reference.npz") as ref:
        assert ref["input_0"].dtype == np.uint8  # the self-check fed raw images
    result = standalone_accuracy(tmp_path, run)
    assert not result["nnrun_imported"]
    assert abs(result["accuracy"] - record["final_metrics"]["val_accuracy"]) <= 0.01
    assert 0.4 < result["accuracy"]  # it learned something: the comparison is not between two chance levels


def _plain_folder_run(tmp: Path, normalize: str) -> Path:
    """The folder run without techniques (no antialiased eval resize: see the tests below)."""
    root = make_noisy_folder(tmp / "images")
    text = FOLDER_CONFIG.replace("  techniques:\n    progressive_resizing: {{sizes: [12, 16], epochs: [1, 1], "
                                 "eval_size: 20}}\n", "").replace("normalize: train", f"normalize: {normalize}")
    assert "progressive" not in text and f"normalize: {normalize}" in text
    return train(tmp, text.format(root=root, runs=tmp / "runs"))


@pytest.fixture(scope="module")
def normalized_run(tmp_path_factory) -> Path:
    return _plain_folder_run(tmp_path_factory.mktemp("normalized"), "train")


@pytest.fixture(scope="module")
def unnormalized_run(tmp_path_factory) -> Path:
    return _plain_folder_run(tmp_path_factory.mktemp("unnormalized"), "none")


@pytest.mark.parametrize("fmt, file, fixture", [("onnx", "model.onnx", "unnormalized_run"),
                                                ("litert", "model.tflite", "normalized_run")])
def test_onnx_and_litert_exports_take_raw_uint8_in_their_own_runtimes(request, fmt, file, fixture):
    """The export (cast to float, rescale and normalisation inside) in onnxruntime and the
    LiteRT interpreter: the val split's raw images give val_accuracy."""
    run = request.getfixturevalue(fixture)
    res = run_cli("export", str(run), "--checkpoint", "last", "--format", fmt)
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path == run / "exported" / file and path.is_file()
    assert f"{fmt}: outputs match on 8 stored raw inputs" in res.stderr
    x, y = raw_split(run)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (feed,) = session.get_inputs()
        assert feed.type == "tensor(uint8)"
        logits = session.run(None, {feed.name: x})[0]
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        (feed,) = interpreter.get_input_details()
        assert feed["dtype"] == np.uint8
        interpreter.resize_tensor_input(feed["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(feed["index"], x)
        interpreter.invoke()
        logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    record = json.loads((run / "run.json").read_text())
    accuracy = float(np.mean(logits.argmax(axis=1) == y))
    assert abs(accuracy - record["final_metrics"]["val_accuracy"]) <= 0.01 and accuracy > 0.4
    info = json.loads((run / "exported" / "export.json").read_text())
    assert info[fmt]["checked_inputs"] == 8 and info[fmt]["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("fmt, file", [("onnx", "model.onnx"), ("litert", "model.tflite")])
def test_a_model_the_format_cannot_hold_is_refused_in_one_line(folder_run, fmt, file):
    """Progressive resizing's eval_size is an antialiased resize (tf ScaleAndTranslate): the
    LiteRT converter has no such op, and tf2onnx writes a node onnxruntime rejects."""
    run, _ = folder_run
    res = run_cli("export", str(run), "--checkpoint", "last", "--format", fmt)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: --format {fmt} cannot convert this model: TensorFlow's ScaleAndTranslate op has no equivalent "
        "in the format (an antialiased resize, e.g. progressive resizing's eval_size); nothing was exported")
    assert not (run / "exported" / file).exists() and not list((run / "exported").glob(".export-*"))


def test_onnx_refuses_a_normalisation_tf2onnx_cannot_freeze(normalized_run):
    res = run_cli("export", str(normalized_run), "--format", "onnx")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: --format onnx cannot convert this model: tf2onnx could not freeze the variables of input_normalize "
        "and made them graph inputs (normalize: train or fixed does this); nothing was exported")
    assert not (normalized_run / "exported" / "model.onnx").exists()


def test_transformer_export_loads_without_nnrun_and_takes_token_ids(sequence_run, tmp_path):
    res = run_cli("export", str(sequence_run))
    assert res.returncode == 0, res.stderr
    info = json.loads((sequence_run / "exported" / "export.json").read_text())
    assert info["input_dtype"] == "int32" and info["preprocess"] is None
    assert info["class_names"] == json.loads((sequence_run / "run.json").read_text())["data"]["class_names"]
    record = json.loads((sequence_run / "run.json").read_text())
    result = standalone_accuracy(tmp_path, sequence_run)
    assert not result["nnrun_imported"]
    assert abs(result["accuracy"] - record["final_metrics"]["best_val_accuracy"]) <= 0.01


# ---------------------------------------------------------------- predict


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_on_the_validation_folder_reproduces_val_accuracy(folder_run, tmp_path):
    run, root = folder_run
    record = json.loads((run / "run.json").read_text())
    res = run_cli("predict", str(run), str(root / "val"), "--checkpoint", "last", "--top-k", "2")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    path = Path(lines[-1])
    assert path.parent == run / "predictions" and path.suffix == ".csv"
    accuracy = float(lines[-2].split()[1])
    assert abs(accuracy - record["final_metrics"]["val_accuracy"]) <= 0.005
    rows = read_csv(path)
    assert len(rows) == 3 * 20
    assert list(rows[0]) == ["path", "predicted", "probability", "top1", "top1_probability", "top2",
                             "top2_probability", "true"]
    for row in rows:
        assert row["predicted"] == row["top1"] and float(row["probability"]) >= float(row["top2_probability"])
        assert row["true"] == Path(row["path"]).parent.name
    assert np.mean([r["predicted"] == r["true"] for r in rows]) == pytest.approx(accuracy)


def test_predict_skips_unreadable_files_and_refuses_when_nothing_is_readable(folder_run, tmp_path):
    run, root = folder_run
    folder = tmp_path / "new"
    (folder / "red").mkdir(parents=True)
    for i, src in enumerate(sorted((root / "val" / "red").iterdir())[:3]):
        (folder / "red" / f"{i}{src.suffix}").write_bytes(src.read_bytes())
    (folder / "red" / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    out = tmp_path / "out" / "predictions.csv"
    res = run_cli("predict", str(run), str(folder), "--out", str(out), "--tta", "flip")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out)
    skipped = [line for line in res.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and any("notes.txt" in s for s in skipped) and any("broken.png" in s for s in skipped)
    rows = read_csv(out)
    assert len(rows) == 3 and all(r["true"] == "red" for r in rows)
    assert all(abs(sum(float(r[f"top{k}_probability"]) for k in (1, 2, 3)) - 1) < 1e-4 for r in rows)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "a.txt").write_text("no")
    res = run_cli("predict", str(run), str(nothing))
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == (
        "error: none of the 1 inputs could be read; nothing predicted")


def test_predict_on_an_npz_of_raw_arrays(folder_run, tmp_path):
    run, _ = folder_run
    x, y = raw_split(run)
    np.savez(tmp_path / "val.npz", x=x[:10], y=y[:10])
    res = run_cli("predict", str(run), str(tmp_path / "val.npz"), "--checkpoint", "last", "--json")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    summary = json.loads(lines[-2])
    rows = read_csv(Path(lines[-1]))
    assert [r["index"] for r in rows] == [f"{tmp_path / 'val.npz'}[{i}]" for i in range(10)]
    assert summary["predicted"] == 10 and summary["labelled"] == 10
    res = run_cli("predict", str(run), str(tmp_path / "nope.npz"))
    assert res.returncode == 2 and "input not found" in res.stderr

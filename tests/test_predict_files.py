"""`nnrun predict` on image files for every image run: float-data runs (the quickstart's shapes),
symlinked class folders, nothing readable, and internal errors kept to one short line."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, train_tiny


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    """A tiny run on `shapes`, whose images are float32 in 0..1 (not uint8 files)."""
    return train_tiny(tmp_path_factory.mktemp("shapes"), "train.epochs=1")


def _val(run: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    from nnrun.engine.build import build_data
    from nnrun.rundir import RunDir

    split = build_data(RunDir.open(run).read_config()).split("val")
    return split.x[:n], split.y[:n]


def _classes(run: Path) -> list[str]:
    import json

    return json.loads((run / "run.json").read_text())["data"]["class_names"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_reads_image_files_for_a_float_data_run_on_the_data_sets_own_scale(shapes_run, tmp_path):
    x, y = _val(shapes_run, 12)
    pixels = np.rint(x * 255).astype(np.uint8)
    names = _classes(shapes_run)
    for i, (image, label) in enumerate(zip(pixels, y)):
        folder = tmp_path / "files" / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    # The same pixels as the data set's own float images (0..1): predictions must match exactly.
    np.savez(tmp_path / "same.npz", x=(pixels.astype(np.float32) / 255), y=y)
    res = run_cli("predict", str(shapes_run), str(tmp_path / "files"), "--out", str(tmp_path / "files.csv"))
    assert res.returncode == 0, res.stderr
    res = run_cli("predict", str(shapes_run), str(tmp_path / "same.npz"), "--out", str(tmp_path / "npz.csv"))
    assert res.returncode == 0, res.stderr
    from_files = {Path(r["path"]).stem: r for r in _rows(tmp_path / "files.csv")}
    from_arrays = _rows(tmp_path / "npz.csv")
    assert len(from_files) == 12
    for i, row in enumerate(from_arrays):
        got = from_files[f"{i:02d}"]
        assert got["predicted"] == row["predicted"] and got["true"] == names[y[i]]
        assert abs(float(got["probability"]) - float(row["probability"])) < 1e-5


def test_predict_with_nothing_readable_is_exit_2_with_one_line_on_a_float_run(shapes_run, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "bad" / "b.jpg").write_text("text")
    res = run_cli("predict", str(shapes_run), str(tmp_path / "bad"))
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if not line.startswith("skipped ")]
    assert errors == ["error: none of the 2 inputs could be read; nothing predicted"], res.stderr


def test_predict_follows_symlinked_class_folders_as_training_does(shapes_run, tmp_path):
    x, y = _val(shapes_run, 6)
    store = tmp_path / "store"
    for i, image in enumerate(np.rint(x * 255).astype(np.uint8)):
        (store / f"c{y[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(store / f"c{y[i]}" / f"{i}.png")
    linked = tmp_path / "linked"
    linked.mkdir()
    names = _classes(shapes_run)
    for label in set(y.tolist()):
        os.symlink(store / f"c{label}", linked / names[label], target_is_directory=True)
    os.symlink(linked, store / f"c{y[0]}" / "loop", target_is_directory=True)  # a link loop ends, once
    res = run_cli("predict", str(shapes_run), str(linked), "--out", str(tmp_path / "out.csv"))
    assert res.returncode == 0, res.stderr
    rows = _rows(tmp_path / "out.csv")
    assert len(rows) == 6 and sorted(r["true"] for r in rows) == sorted(names[v] for v in y)


def test_image_files_follow_links_skip_hidden_and_visit_each_folder_once(tmp_path):
    from nnrun.components.data.image_folder import image_files

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "a.png").write_bytes(b"x")
    (tmp_path / "real" / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "real" / ".hidden").mkdir()
    (tmp_path / "real" / ".hidden" / "c.png").write_bytes(b"x")
    (tmp_path / "real" / ".d.png").write_bytes(b"x")
    (tmp_path / "top").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "top" / "cls")
    os.symlink(tmp_path / "top", tmp_path / "real" / "sub" / "back")
    found = [p.relative_to(tmp_path / "top").as_posix() for p in image_files(tmp_path / "top")]
    assert found == ["cls/a.png", "cls/sub/b.png"]


def test_an_internal_error_holding_a_tensor_is_one_capped_line():
    from nnrun.cli.app import MAX_INTERNAL_ERROR, internal_error_line

    dump = "Binding inputs to tf.function failed\n" + "tf.Tensor(\n" + "[[0.1 0.2 0.3]\n" * 5000 + ")"
    line = internal_error_line(TypeError(dump))
    assert "\n" not in line and len(line) <= MAX_INTERNAL_ERROR + 40
    assert line.startswith("TypeError: Binding inputs to tf.function failed")

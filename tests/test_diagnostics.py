"""Where the model fails: confusion matrix and per-class scores against scikit-learn, the
calibration error against a hand computation, and the files, report section and evaluate
tables a real run gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnrun.engine import diagnostics
from tests.conftest import run_cli, train_tiny


def test_confusion_matrix_and_per_class_scores_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.integers(0, 4, 400))  # class 4 rarely predicted
    y_pred[y_pred == 4] = 0  # ... and never: its precision is 0 by sklearn's zero_division=0
    ours = diagnostics.confusion_matrix(y_true, y_pred, 6)  # class 5 has no examples at all
    assert ours.tolist() == confusion_matrix(y_true, y_pred, labels=range(6)).tolist()
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(6), zero_division=0)
    scores = diagnostics.per_class_scores(ours)
    assert np.allclose([c["precision"] for c in scores], p) and np.allclose([c["recall"] for c in scores], r)
    assert np.allclose([c["f1"] for c in scores], f) and [c["support"] for c in scores] == s.tolist()


def test_expected_calibration_error_by_hand():
    probs = np.array([[0.95, 0.03, 0.02],   # confidence 0.95, bin 14, right
                      [0.02, 0.95, 0.03],   # 0.95, bin 14, wrong (true 0)
                      [0.55, 0.40, 0.05],   # 0.55, bin 8, right
                      [0.30, 0.29, 0.41]])  # 0.41, bin 6 (0.4 < c <= 0.4667), wrong (true 0)
    y = np.array([0, 0, 0, 0])
    ece, bins = diagnostics.calibration(probs, y)
    # 2/4 * |0.5 - 0.95| + 1/4 * |1 - 0.55| + 1/4 * |0 - 0.41|
    assert ece == pytest.approx(0.5 * 0.45 + 0.25 * 0.45 + 0.25 * 0.41)
    assert [b["count"] for b in bins] == [0] * 6 + [1, 0, 1] + [0] * 5 + [2]
    assert bins[14]["accuracy"] == 0.5 and bins[14]["confidence"] == pytest.approx(0.95)
    perfect, _ = diagnostics.calibration(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    assert perfect == 0.0


def test_a_run_writes_its_diagnostics_the_report_shows_them_and_evaluate_agrees(tmp_path):
    run = train_tiny(tmp_path, "train.epochs=2")
    record = json.loads((run / "run.json").read_text())
    final = record["final_metrics"]
    summary = json.loads((run / "diagnostics" / "val.json").read_text())
    matrix = np.array(summary["confusion_matrix"])
    assert matrix.sum() == summary["examples"] == 128
    assert np.trace(matrix) / matrix.sum() == pytest.approx(summary["accuracy"])
    assert final["val_calibration_error"] == pytest.approx(summary["calibration_error"])
    assert 0 <= final["val_macro_f1"] <= 1
    for name in ("val_confusion.png", "val_reliability.png"):
        assert (run / "diagnostics" / name).read_bytes()[:4] == b"\x89PNG"
    wrong = summary["confidently_wrong"]
    probabilities = [w["probability"] for w in wrong]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(w["true"] != w["predicted"] for w in wrong)
    if wrong:
        assert (run / "diagnostics" / "val_wrong.png").is_file()
    html = (run / "report.html").read_text()
    assert "Where the model fails" in html and "reliability diagram" in html and "confusion matrix" in html

    res = run_cli("evaluate", str(run), "--split", "val", "--checkpoint", "last", "--json")
    assert res.returncode == 0, res.stderr
    scores = json.loads(res.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "diagnostics" / "val.json").read_text())
    assert summary["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-6)  # Keras' own metric
    assert scores["val_calibration_error"] == pytest.approx(summary["calibration_error"])
    res = run_cli("evaluate", str(run), "--split", "val")
    assert res.returncode == 0, res.stderr
    assert "confusion matrix (rows: true, columns: predicted)" in res.stdout and "calibration error" in res.stdout

    import shutil

    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(run / "diagnostics")
    (run / "diagnostics").symlink_to(outside, target_is_directory=True)  # a run directory from elsewhere
    res = run_cli("evaluate", str(run), "--split", "val")
    assert res.returncode == 2 and "symbolic link" in res.stderr, res.stderr
    assert list(outside.iterdir()) == []


def test_displayable_images_keep_their_dtype_range():
    from nnrun.engine.diagnostic_plots import _displayable

    assert _displayable(np.full((1, 2, 2, 3), 255, np.uint8)).max() == 1.0
    assert _displayable(np.full((1, 2, 2, 1), 0.5, np.float32)).max() == 0.5
    stretched = _displayable(np.array([[[[-2.0]], [[2.0]]]]))
    assert stretched.min() == 0.0 and stretched.max() == 1.0

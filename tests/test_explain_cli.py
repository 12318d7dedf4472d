"""`nnrun explain` through the real CLI on a tiny trained run: outputs, manifest, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("explain")
    config = tmp / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp / "runs")))
    res = run_cli("train", str(config), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def labels_of(run: Path, n: int) -> list[int]:
    from nnrun.engine.build import build_data
    from nnrun.rundir import RunDir

    return build_data(RunDir.open(run).read_config()).split("val").y[:n].tolist()


def test_gradcam_writes_maps_overlays_grid_and_manifest(run_dir):
    res = run_cli("explain", str(run_dir), "--method", "gradcam", "--num-images", "6", "--sanity-check")
    assert res.returncode == 0, res.stderr
    out = run_dir / "explain" / "gradcam"
    assert res.stdout.strip().splitlines()[-1] == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_images"] == 6 and manifest["explainer"]["layer"] == "s2b1_out"
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for item in manifest["images"]:
        heatmap = np.load(out / item["heatmap"])
        assert heatmap.shape == (16, 16) and np.isfinite(heatmap).all()
        assert (out / item["overlay"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert item["target"] == item["predicted"]  # default --target predicted
        assert 0 < item["probability"] <= 1 and isinstance(item["pointing_hit"], bool)
    assert [i["true"]["index"] for i in manifest["images"]] == labels_of(run_dir, 6)
    summary = manifest["summary"]
    assert summary["pointing_game"] == np.mean([i["pointing_hit"] for i in manifest["images"]])
    assert summary["pointing_tolerance_px"] == 1
    assert -1 <= summary["sanity_rank_correlation"] <= 1 and "sanity_undefined" in summary
    assert "pointing_game" in res.stdout


def test_integrated_gradients_reports_completeness_for_true_classes(run_dir, tmp_path):
    out = tmp_path / "ig"
    res = run_cli("explain", str(run_dir), "--method", "integrated-gradients", "--num-images", "3",
                  "--steps", "32", "--target", "true", "--batch-size", "20", "--output", str(out))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["target"]["index"] for i in manifest["images"]] == labels_of(run_dir, 3)
    errors = [i["completeness_error"] for i in manifest["images"]]
    assert manifest["summary"]["completeness_error_max"] == max(errors)
    for item in manifest["images"]:
        attributions = np.load(out / item["heatmap"])
        assert attributions.shape == (16, 16, 3)
        gap = item["score"] - item["baseline_score"]
        assert abs(attributions.sum() - gap) == pytest.approx(item["completeness_error"] * abs(gap), abs=1e-5)


def test_class_index_target(run_dir, tmp_path):
    res = run_cli("explain", str(run_dir), "--num-images", "2", "--target", "3", "--output", str(tmp_path / "t"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert [i["target"] for i in manifest["images"]] == [{"index": 3, "name": "cross"}] * 2


def one_line_error(res, text: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_bad_requests_exit_2_with_one_line(run_dir, tmp_path):
    one_line_error(run_cli("explain", str(run_dir), "--method", "gradcan"),
                   "error: --method: unknown explainer 'gradcan'; did you mean 'gradcam'?")
    one_line_error(run_cli("explain", str(run_dir), "--target", "4"),
                   "error: --target 4 is out of range: the model has 4 classes (0..3)")
    one_line_error(run_cli("explain", str(run_dir), "--method", "integrated-gradients", "--layer", "s1b1_out"),
                   "error: --layer does not apply to the integrated-gradients explainer")
    bare = tmp_path / "no-checkpoint"
    bare.mkdir()
    shutil.copy(run_dir / "config.yaml", bare / "config.yaml")
    one_line_error(run_cli("explain", str(bare)), "error: run has no checkpoint checkpoints/best.keras")
    one_line_error(run_cli("explain", str(tmp_path / "missing")), "error: not a run directory")
    one_line_error(run_cli("explain", str(run_dir), "--layer", "logits"),
                   "error: layer 'logits' has output shape (None, 4), not 4-D (batch, height, width, channels)")
    assert not (run_dir / "explain" / "integrated-gradients").exists()

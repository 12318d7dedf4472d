"""Issue 3's configs validate, its components are listed, the after-fit metrics are right,
and (slow) the final metrics reach run.json from a real `nnrun train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnrun.engine.metrics import balanced_accuracy, best_threshold, pair_accuracy, per_class_recall
from tests.conftest import ROOT, run_cli

CONFIGS = ["resnet_shapes", "transformer_sequences", "focal_imbalanced", "crossentropy_imbalanced",
           "siamese_contrastive"]
NEW = {("model", "transformer"), ("model", "siamese"), ("model", "resnet"), ("loss", "focal"),
       ("loss", "contrastive"), ("dataset", "sequences"), ("dataset", "pairs"), ("dataset", "shapes"),
       ("layer", "additive_attention")}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates(name):
    from nnrun.config import load_config

    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name


def test_twin_configs_differ_only_in_loss_and_name():
    from nnrun.config import load_config

    focal = load_config(ROOT / "configs/focal_imbalanced.yaml").model_dump()
    ce = load_config(ROOT / "configs/crossentropy_imbalanced.yaml").model_dump()
    assert focal["loss"]["name"] == "focal" and ce["loss"]["name"] == "crossentropy"
    for key in ("name", "loss"):
        focal.pop(key), ce.pop(key)
    assert focal == ce


def test_components_lists_every_new_component_with_parameters():
    res = run_cli("components", "--json")
    assert res.returncode == 0, res.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(res.stdout)}
    assert NEW <= set(rows)
    for key in NEW:
        assert rows[key]["doc"] and rows[key]["params"], key
        assert all(p["doc"] for p in rows[key]["params"]), key
    assert "class_balance" in {p["name"] for p in rows[("dataset", "shapes")]["params"]}
    assert {"gamma", "alpha", "mode"} <= {p["name"] for p in rows[("loss", "focal")]["params"]}


def test_siamese_encoder_params_are_checked_without_tensorflow():
    res = run_cli("validate", str(ROOT / "configs/siamese_contrastive.yaml"),
                  "--set", "model.params.encoder.params.block=wide")
    assert res.returncode == 2
    assert "model.params.encoder" in res.stderr and "params.block" in res.stderr


def test_per_class_recall_and_balanced_accuracy_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    assert per_class_recall(y, pred, 4) == {0: 0.75, 1: 0.5, 2: 1.0}  # class 3 absent: no recall
    assert balanced_accuracy(y, pred, 4) == pytest.approx(0.75)


def test_best_threshold_is_chosen_on_the_given_pairs():
    d = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    same = np.array([1, 1, 0, 1, 0, 0])
    threshold, accuracy = best_threshold(d, same)
    assert accuracy == pytest.approx(5 / 6) and (0.2 <= threshold < 0.35 or 0.4 <= threshold < 0.8)
    assert pair_accuracy(d, same, threshold) == pytest.approx(accuracy)
    # a brute force over every candidate agrees
    brute = max(pair_accuracy(d, same, t) for t in np.concatenate([d, [-1.0]]))
    assert accuracy == pytest.approx(brute)
    # ties are never split, and "all different" is a valid answer
    t, acc = best_threshold(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 0]))
    assert acc == pytest.approx(2 / 3) and pair_accuracy(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 0]), t) == acc


TINY_FOCAL = """\
name: tiny_focal
seed: 0
data:
  dataset: shapes
  params: {num_train: 256, num_val: 128, image_size: 16, classes: [circle, square, triangle],
           class_balance: [0.8, 0.1, 0.1], min_scale: 0.5, max_scale: 0.9}
  batch_size: 64
model: {name: resnet, params: {stages: [8], blocks_per_stage: 1}}
loss: {name: focal, params: {gamma: 2.0, alpha: [0.5, 1.0, 1.0]}}
optimizer: {name: adam, learning_rate: 0.01}
train: {epochs: 1}
runtime: {runs_root: RUNS}
"""

TINY_SIAMESE = """\
name: tiny_siamese
seed: 0
data:
  dataset: pairs
  params: {num_train: 128, num_val: 64, image_size: 16}
  batch_size: 32
model: {name: siamese, params: {encoder: {name: resnet, params: {stages: [8], blocks_per_stage: 1}}, embedding_dim: 8}}
loss: {name: contrastive, params: {margin: 1.0}}
optimizer: {name: adam, learning_rate: 0.003}
train: {epochs: 1, monitor: val_loss}
runtime: {runs_root: RUNS}
"""


@pytest.mark.slow
@pytest.mark.parametrize("text", [TINY_FOCAL, TINY_SIAMESE], ids=["focal", "siamese"])
def test_train_writes_the_after_fit_metrics(tmp_path: Path, text: str):
    config = tmp_path / "cfg.yaml"
    config.write_text(text.replace("RUNS", str(tmp_path / "runs")))
    res = run_cli("train", str(config), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    final = json.loads((run / "run.json").read_text())["final_metrics"]
    if "focal" in text:
        recalls = [final[f"val_recall_{c}"] for c in ("circle", "square", "triangle")]
        assert all(0 <= r <= 1 for r in recalls)
        assert final["val_balanced_accuracy"] == pytest.approx(np.mean(recalls))
    else:
        assert 0 <= final["val_pair_accuracy"] <= 1 and final["train_pair_accuracy"] >= 0.5
        assert 0 <= final["pair_threshold"] <= 2  # unit-norm embeddings: distances in [0, 2]
        assert "val_half_margin_accuracy" in final or "val_loss" in final
        evaluated = run_cli("evaluate", str(run), "--json", "--checkpoint", "last")  # reloads the siamese checkpoint
        assert evaluated.returncode == 0, evaluated.stderr
        scores = json.loads(evaluated.stdout)
        assert "half_margin_accuracy" in scores
        # the run's headline metric, at the threshold training chose (final metrics score the last model)
        assert scores["pair_threshold"] == final["pair_threshold"]
        assert scores["val_pair_accuracy"] == pytest.approx(final["val_pair_accuracy"])

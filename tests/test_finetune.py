"""Fine-tuning: `model.init_from` (layers matched by name and shape, head re-created), and the
`finetune` technique (frozen backbone with BatchNorm in inference mode, then a scaled backbone lr),
including exact resume of a run killed in its frozen phase."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import keras
import numpy as np
import pytest

from nnrun.config import load_config
from nnrun.engine import build
from tests.conftest import TINY, run_cli
from tests.test_reliability import assert_identical, epochs_logged, start_and_stop

PRETRAIN = TINY.replace("name: tiny", "name: pre").replace(
    "image_size: 16,", "image_size: 16, classes: [circle, square],").replace(
    "num_train: 1024", "num_train: 256").replace("train: {epochs: 3}", "train: {epochs: 1}")


def finetune_config(tmp: Path, init_from, classes="[triangle, cross]", extra="") -> Path:
    text = (TINY.replace("name: tiny", "name: ft").replace("image_size: 16,", f"image_size: 16, classes: {classes},")
            .replace("num_train: 1024", "num_train: 64").replace("batch_size: 64", "batch_size: 16")
            .replace("train: {epochs: 3}", "train:\n  epochs: 3\n  techniques:\n    finetune: {freeze_epochs: 2}"
                     + extra)
            .replace("params: {stages: [8, 16], blocks_per_stage: 1}",
                     f"params: {{stages: [8, 16], blocks_per_stage: 1}}\n  init_from: {init_from}"))
    path = tmp / "ft.yaml"
    path.write_text(text.replace("RUNS", str(tmp / "runs")))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pretrain")
    config = tmp / "pre.yaml"
    config.write_text(PRETRAIN.replace("RUNS", str(tmp / "runs")))
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def built(config: Path):
    cfg = load_config(config)
    data = build.build_data(cfg)
    return cfg, data, build.build_model(cfg, data)


def test_init_from_a_runs_directory_loads_matching_layers_and_a_new_head(pretrained, tmp_path):
    from nnrun.engine.init_from import initialise

    cfg, data, model = built(finetune_config(tmp_path, pretrained.parent))  # runs/pre: its newest completed run
    record = initialise(model, cfg.model.init_from, "best", data.class_names)
    source = keras.saving.load_model(pretrained / "checkpoints" / "best.keras", compile=False)
    assert record["source"] == str((pretrained / "checkpoints" / "best.keras").resolve())
    assert record["new"] == ["logits"] and "other classes (circle, square)" in record["head"]
    assert "stem_conv" in record["loaded"] and "s2b1_proj_bn" in record["loaded"] and "logits" not in record["loaded"]
    for name in ("stem_conv", "s2b1_proj_bn", "input_rescale"):
        if name in record["loaded"]:
            for mine, theirs in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
                np.testing.assert_array_equal(mine, theirs)
    # the head (2 classes, as the source's, but other classes) keeps its fresh initialisation
    assert not np.array_equal(model.get_layer("logits").get_weights()[0], source.get_layer("logits").get_weights()[0])


def test_init_from_a_weights_file_matches_by_path_and_shape(pretrained, tmp_path):
    from nnrun.engine.init_from import initialise

    source = keras.saving.load_model(pretrained / "checkpoints" / "best.keras", compile=False)
    source.save_weights(tmp_path / "pre.weights.h5")
    cfg, data, model = built(finetune_config(tmp_path, tmp_path / "pre.weights.h5", "[triangle, cross, circle]"))
    record = initialise(model, cfg.model.init_from)
    assert record["new"] == ["logits"]  # 3 classes: the head's shapes differ
    np.testing.assert_array_equal(model.get_layer("s1b1_a_conv").get_weights()[0],
                                  source.get_layer("s1b1_a_conv").get_weights()[0])


def test_init_from_that_loads_nothing_is_a_config_error_before_any_run_directory(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="unrelated")])
    other.save(tmp_path / "other.keras")
    for source, message in ((tmp_path / "other.keras", "nothing would be loaded"),
                            (tmp_path / "missing.keras", "not found"),
                            (tmp_path, "neither a run directory nor a directory holding a completed run")):
        res = run_cli("train", str(finetune_config(tmp_path, source)))
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("config error: model.init_from: ") and message in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_finetune_freezes_the_backbone_and_its_batchnorm_then_trains_everything(pretrained, tmp_path, batchnorm):
    from nnrun.components.techniques.finetune import build as build_finetune, FinetuneParams
    from nnrun.engine import pipeline

    cfg, data, model = built(finetune_config(tmp_path, pretrained))
    ctx = build.technique_context(cfg, data)
    technique = build_finetune(FinetuneParams(freeze_epochs=1, backbone_lr_scale=0.5, batchnorm=batchnorm), ctx)
    build.compile_model(model, cfg, data, techniques=[technique])
    ds = pipeline.train_dataset(data.split("train"), batch_size=16, seed=0, num_classes=2, label_mode="onehot",
                                first_epoch=0, last_epoch=1)
    before = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}
    assert technique.before_segment(model, 0)  # frozen: the trainable set changed
    model.fit(ds, epochs=1, steps_per_epoch=4, verbose=0, shuffle=False)
    assert len(model.optimizer.variables) > 2 * len(model.trainable_variables)  # built for every variable
    for layer in model.layers:
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
        assert same == (layer.name != "logits"), layer.name  # incl. BatchNorm moving statistics
    assert technique.before_segment(model, 1)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.trainable == (batchnorm == "train") for layer in norms)
    assert all(layer.trainable for layer in model.layers if layer not in norms)
    stats = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in norms}
    model.train_function = None
    model.fit(ds, epochs=1, steps_per_epoch=4, verbose=0, shuffle=False)
    assert not np.array_equal(before["stem_conv"][0], model.get_layer("stem_conv").get_weights()[0])
    for layer in norms:  # frozen: gamma, beta and the moving statistics stay the pretrained ones
        same = all(np.array_equal(a, b) for a, b in zip(stats[layer.name], layer.get_weights()))
        assert same == (batchnorm == "frozen"), layer.name


def test_backbone_learning_rate_and_weight_decay_are_scaled_per_variable():
    from nnrun.components.techniques.finetune import scale_lr

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Dense(4, name="body")(inputs)))
    optimizer = keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.01)
    optimizer.build(model.trainable_variables)
    scale_lr(optimizer, model.get_layer("body").trainable_weights, 0.25)
    start = [v.numpy() for v in model.trainable_variables]
    grads = [np.ones_like(v) for v in start]
    optimizer.apply(grads, model.trainable_variables)
    for var, w0, g in zip(model.trainable_variables, start, grads):
        lr = 0.1 * (0.25 if var.path.startswith("body") else 1.0)
        expected = w0 - w0 * lr * 0.01 - lr * g  # decoupled decay at the variable's own rate, then the step
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6, err_msg=var.path)


@pytest.mark.slow
def test_kill_in_the_frozen_phase_then_resume_is_bit_identical(pretrained, tmp_path):
    config = finetune_config(tmp_path, pretrained, extra="\n    mixup: {alpha: 0.3}")
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    reference = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((reference / "run.json").read_text())
    assert record["init"]["new"] == ["logits"]
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["backbone_frozen"] for r in rows] == [True, True, False]
    run, proc = start_and_stop(config, tmp_path / "runs" / "ft", lambda r: epochs_logged(r) >= 1)
    assert proc.returncode == -signal.SIGKILL and epochs_logged(run) < 2  # killed inside the frozen phase
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "run.json").read_text())["init"] == record["init"]  # recorded once, not re-applied
    assert_identical(reference, run)

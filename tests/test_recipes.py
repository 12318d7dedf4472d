"""The recipes people run on photos (issue 21): EMA, gradient accumulation, step / multistep /
exponential / one-cycle / plateau schedules, RandAugment, TrivialAugment, random erasing,
lr-find and ablate. Each: its math against a reference, exact resume after kill -9 mid-epoch,
and one-line errors for bad parameters."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, run_cli

SMALL = (TINY.replace("num_train: 1024, num_val: 128", "num_train: 256, num_val: 64")
         .replace("batch_size: 64", "batch_size: 32"))


def small_config(tmp: Path, train: str, optimizer: str = "optimizer: {name: adam, learning_rate: 0.01}",
                 name: str = "tiny") -> Path:
    text = SMALL.replace("train: {epochs: 3}", train).replace("optimizer: {name: adam, learning_rate: 0.01}", optimizer)
    path = tmp / f"{name}.yaml"
    path.write_text(text.replace("RUNS", str(tmp / "runs")))
    return path


# -- schedules: values against their reference formulas ---------------------------------------

def _values(name: str, params: dict, base=0.1, steps_per_epoch=10, epochs=10, steps=range(0, 100, 7)):
    from nnrun import registry

    component = registry.get("schedule", name)
    schedule = component.builder(component.params.model_validate(params), base, steps_per_epoch, epochs)
    return [float(schedule(s)) for s in steps], list(steps)


def test_step_multistep_and_exponential_follow_pytorchs_formulas():
    got, steps = _values("step", {"step_epochs": 3, "gamma": 0.5})
    np.testing.assert_allclose(got, [0.1 * 0.5 ** (s // 30) for s in steps], rtol=1e-6)
    got, steps = _values("multistep", {"milestones": [2, 5], "gamma": 0.1})
    np.testing.assert_allclose(got, [0.1 * 0.1 ** sum(s >= m * 10 for m in (2, 5)) for s in steps], rtol=1e-5)
    got, steps = _values("exponential", {"gamma": 0.8})
    np.testing.assert_allclose(got, [0.1 * 0.8 ** (s / 10) for s in steps], rtol=1e-5)


def _one_cycle_reference(step, total, peak, pct=0.3, div=25.0, final_div=1e4, lo=0.85, hi=0.95):
    """PyTorch OneCycleLR (two phases, cos), written from its documentation."""
    initial, final = peak / div, peak / div / final_div
    warm_end = pct * total - 1
    cos = lambda a, b, p: b + (a - b) / 2 * (1 + math.cos(math.pi * p))  # noqa: E731
    if step <= warm_end:
        p = step / warm_end
        return cos(initial, peak, p), cos(hi, lo, p)
    p = (step - warm_end) / (total - 1 - warm_end)
    return cos(peak, final, p), cos(lo, hi, p)


def test_one_cycle_rate_and_momentum_follow_pytorchs_one_cycle():
    from nnrun.components.optim.schedule_hooks import OneCycle

    schedule = OneCycle(0.1, 100, cycle_momentum=True)
    for step in (0, 5, 29, 30, 50, 99):
        lr, momentum = _one_cycle_reference(step, 100, 0.1)
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5)
        assert float(schedule.momentum(step)) == pytest.approx(momentum, rel=1e-5)
    assert float(schedule(0)) == pytest.approx(0.1 / 25) and float(schedule(99)) == pytest.approx(0.1 / 25 / 1e4)


def test_one_cycle_momentum_is_what_sgd_steps_with():
    import keras

    from nnrun.components.optim.schedule_hooks import OneCycle

    schedule = OneCycle(0.1, 20, cycle_momentum=True)
    variable = keras.Variable(np.zeros(3, np.float32))
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=False)
    schedule.attach(optimizer)
    optimizer.build([variable])
    m, w = np.zeros(3), np.zeros(3)
    for step in range(6):
        g = np.full(3, step + 1.0)
        optimizer.apply([g.astype(np.float32)], [variable])
        m = m * float(schedule.momentum(step)) - float(schedule(step)) * g
        w = w + m
        np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5)
    assert optimizer.get_config()["momentum"] == 0.9  # the configured value stays in the config


def test_plateau_reduces_exactly_when_keras_reduce_lr_on_plateau_does():
    import keras

    from nnrun.components.optim.schedule_hooks import Plateau

    values = [1.0, 0.9, 0.95, 0.91, 0.92, 0.80, 0.85, 0.86, 0.87, 0.9, 0.7, 0.75, 0.76]
    params = dict(monitor="val_loss", factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.02)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    reference = keras.callbacks.ReduceLROnPlateau(mode="min", verbose=0, **params)
    reference.set_model(model)
    reference.on_train_begin()
    expected = []
    for epoch, v in enumerate(values):
        reference.on_epoch_end(epoch, {"val_loss": v})
        expected.append(float(model.optimizer.learning_rate))
    schedule = Plateau(0.1, mode="auto", **params)
    optimizer = keras.optimizers.SGD(schedule)
    schedule.attach(optimizer)
    optimizer.build(model.trainable_variables)
    schedule.set_direction(False)
    got = []
    for v in values:
        schedule.epoch_end({"val_loss": v})
        got.append(float(schedule(0)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert len(set(got)) >= 3  # it did reduce, twice, down to min_lr
    assert {v.path.split("/")[-1] for v in optimizer.variables} >= {"plateau_scale", "plateau_best", "plateau_wait",
                                                                      "plateau_cooldown"}  # in the backup


# -- EMA, accumulation and the finetune head rate: optimizer math ------------------------------

def _tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(4, name="body")(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def test_ema_follows_timms_update_with_warm_up_and_averages_batchnorm_statistics():
    import keras

    from nnrun.components.techniques.base import TechniqueContext
    from nnrun.components.techniques.ema import EMA, EMAParams

    model = _tiny_model()
    ctx = TechniqueContext(epochs=1, batch_size=4, steps_per_epoch=3, image_size=None, label_mode="onehot")
    ema = EMA(EMAParams(decay=0.9, warmup=True, warmup_power=0.75), ctx)
    model.compile(optimizer=ema.configure_optimizer(keras.optimizers.SGD(0.1), model), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 3), np.float32), rng.random((12, 2), np.float32)
    expected = [v.numpy().copy() for v in model.weights]
    for step in range(3):
        model.train_on_batch(x[4 * step:4 * step + 4], y[4 * step:4 * step + 4])
        d = min(0.9, 1 - (1 + (step + 1)) ** -0.75)  # timm ModelEmaV3.get_decay at this step
        expected = [d * e + (1 - d) * v.numpy() for e, v in zip(expected, model.weights)]
    assert [v.path for v in ema.sources] == [v.path for v in model.weights]  # BatchNorm's moving stats too
    for average, want in zip(ema.averages, expected):
        np.testing.assert_allclose(average.numpy(), want, rtol=1e-5, atol=1e-7)
    raw = [v.numpy().copy() for v in model.weights]
    ema.use_eval_weights(model)
    for v, want in zip(model.weights, expected):
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-7)
    ema.use_train_weights(model)
    assert all(np.array_equal(v.numpy(), r) for v, r in zip(model.weights, raw))  # an exact exchange


def test_gradient_accumulation_steps_with_the_mean_of_its_batches_gradients(tmp_path):
    import keras

    from nnrun.config import load_config
    from nnrun.engine import build

    cfg = load_config(small_config(tmp_path, "train: {epochs: 1, gradient_accumulation_steps: 3}",
                                   "optimizer: {name: sgd, learning_rate: 0.1, params: {momentum: 0.0}}"))
    optimizer = build.build_optimizer(cfg, 256)
    variable = keras.Variable(np.ones(2, np.float32))
    optimizer.build([variable])
    grads = [np.array([1.0, 2.0]), np.array([3.0, -1.0]), np.array([2.0, 5.0]), np.array([1.0, 1.0])]
    for g in grads[:2]:
        optimizer.apply([g.astype(np.float32)], [variable])
        np.testing.assert_array_equal(variable.numpy(), [1.0, 1.0])  # accumulating, no step yet
    optimizer.apply([grads[2].astype(np.float32)], [variable])
    np.testing.assert_allclose(variable.numpy(), 1.0 - 0.1 * np.mean(grads[:3], axis=0), rtol=1e-6)


def test_finetune_raises_the_heads_rate_while_frozen_and_scales_the_backbone():
    import keras

    from nnrun.components.techniques.finetune import scale_lr

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Dense(4, name="body")(inputs)))
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    scale_lr(optimizer, model.get_layer("body").trainable_weights, 0.25, model.get_layer("logits").trainable_weights,
             10.0, head_until=2)
    for step in range(4):
        start = [v.numpy() for v in model.trainable_variables]
        optimizer.apply([np.ones_like(w) for w in start], model.trainable_variables)
        for var, w0 in zip(model.trainable_variables, start):
            scale = 0.25 if var.path.startswith("body") else (10.0 if step < 2 else 1.0)
            np.testing.assert_allclose(var.numpy(), w0 - 0.1 * scale, rtol=1e-6, err_msg=f"{var.path} step {step}")


# -- RandAugment / TrivialAugment / random erasing -------------------------------------------

def _pil_reference(op, images, values):
    from PIL import Image, ImageEnhance, ImageOps

    out = []
    for im, v in zip(images, values):
        pil = Image.fromarray(im)
        fn = {"posterize": lambda: ImageOps.posterize(pil, int(v)), "solarize": lambda: ImageOps.solarize(pil, v),
              "autocontrast": lambda: ImageOps.autocontrast(pil), "equalize": lambda: ImageOps.equalize(pil),
              "brightness": lambda: ImageEnhance.Brightness(pil).enhance(v),
              "color": lambda: ImageEnhance.Color(pil).enhance(v),
              "contrast": lambda: ImageEnhance.Contrast(pil).enhance(v),
              "sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(v)}[op]
        out.append(np.asarray(fn(), np.float32))
    return np.stack(out)


@pytest.mark.parametrize("op, values, tolerance", [
    ("posterize", [4, 6, 2], 0), ("solarize", [128, 200, 10], 0), ("equalize", [0, 0, 0], 0),
    ("autocontrast", [0, 0, 0], 1), ("brightness", [1.5, 0.4, 1.0], 1), ("color", [0.3, 1.8, 0.0], 1),
    ("contrast", [1.7, 0.2, 1.0], 1), ("sharpness", [1.8, 0.1, 1.0], 1),
])
def test_image_ops_compute_what_pil_computes(op, values, tolerance):
    """The RandAugment paper's code (and timm's) runs these ops in PIL: the same 8-bit levels,
    exactly for the integer ops and within one level (PIL rounds in integer arithmetic) for blends."""
    import tensorflow as tf

    from nnrun.components.techniques import image_ops

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 24, 20, 3), dtype=np.uint8)
    images[1] = images[1] // 3 + 40  # low contrast: autocontrast and equalize have work to do
    x = tf.constant(images, tf.float32)
    fn = getattr(image_ops, op)
    got = fn(x, 255.0) if op in ("equalize", "autocontrast") else fn(x, tf.constant(values, tf.float32), 255.0)
    assert np.abs(np.round(got.numpy()) - _pil_reference(op, images, values)).max() <= tolerance


def test_affine_translates_and_rotates_exactly_at_whole_pixels():
    import tensorflow as tf

    from nnrun.components.techniques import image_ops

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 20, 20, 3)).astype(np.float32)
    zero = tf.zeros(2)
    moved = image_ops.affine(tf.constant(images), zero, zero, tf.constant([3.0, 0.0]), tf.constant([0.0, -2.0]),
                             zero, 255.0).numpy()
    np.testing.assert_array_equal(moved[0][:, 3:], images[0][:, :-3])
    np.testing.assert_array_equal(moved[1][:-2], images[1][2:])
    assert np.all(moved[0][:, :3] == 128)  # filled with grey
    turned = image_ops.affine(tf.constant(images), zero, zero, zero, zero, tf.constant([90.0, 180.0]), 255.0).numpy()
    np.testing.assert_allclose(turned[0], np.rot90(images[0], -1), atol=1e-3)
    np.testing.assert_allclose(turned[1], np.rot90(images[1], 2), atol=1e-3)


def _technique(name: str, params: dict, image_size=16):
    from nnrun import registry
    from nnrun.components.techniques.base import TechniqueContext

    component = registry.get("technique", name)
    ctx = TechniqueContext(epochs=1, batch_size=8, steps_per_epoch=1, image_size=image_size, label_mode="onehot")
    return component.builder(component.params.model_validate(params), ctx)


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_augmentations_draw_per_example_from_the_stateless_key(name):
    import tensorflow as tf

    technique = _technique(name, {"num_ops": 2, "magnitude": 15} if name == "randaugment" else {})
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.float32)
    batch = tf.constant(np.repeat(image, 32, axis=0))
    key = tf.constant([7, 11], tf.int64)
    a, _ = technique.batch_transform(batch, None, 0, key)
    b, _ = technique.batch_transform(batch, None, 0, key)
    c, _ = technique.batch_transform(batch, None, 0, tf.constant([7, 12], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # the same key: the same augmentation
    assert not np.array_equal(a.numpy(), c.numpy())
    distinct = {a.numpy()[i].tobytes() for i in range(32)}
    assert len(distinct) >= 12  # copies of one image: each example got its own ops
    assert a.numpy().min() >= 0 and a.numpy().max() <= 255


def test_random_erasing_draws_rectangles_as_torchvision_does():
    import tensorflow as tf

    technique = _technique("random_erasing", {"probability": 0.5, "scale": [0.05, 0.3], "ratio": [0.5, 2.0],
                                              "value": "zero"}, image_size=32)
    images = tf.ones([4000, 32, 32, 1]) * 200.0
    out, _ = technique.batch_transform(images, None, 0, tf.constant([1, 2], tf.int64))
    erased = out.numpy()[..., 0] == 0
    applied = erased.any(axis=(1, 2))
    assert 0.46 < applied.mean() < 0.54
    area = erased[applied].mean(axis=(1, 2))
    assert area.min() >= 0.05 * 0.8 and area.max() <= 0.3 * 1.2  # rounding of h and w
    for mask in erased[applied][:200]:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one rectangle
        assert 0.5 * 0.6 <= len(rows) / len(cols) <= 2.0 * 1.6
    assert np.all(out.numpy()[~applied] == 200)


@pytest.mark.parametrize("setting, message", [
    ("train.techniques.randaugment.magnitude=31", "train.techniques.randaugment.magnitude: expected a value <= 30"),
    ("train.techniques.random_erasing.scale=[0.5, 0.2]", "scale must be 0 < min <= max <= 1"),
    ("train.techniques.ema.decay=1.5", "train.techniques.ema.decay: expected a value < 1"),
    ("optimizer.schedule={name: multistep, params: {milestones: [3, 2]}}", "milestones must be one or more increasing"),
    ("optimizer.schedule={name: one_cycle, params: {cycle_momentum: true}}", "cycle_momentum cycles SGD's momentum"),
    ("train.gradient_accumulation_steps=1", "train.gradient_accumulation_steps: expected a value >= 2"),
    ("train.techniques.trivialaugment.strength=3", "unknown key 'strength'"),
])
def test_bad_recipe_parameters_are_one_line_exit_2(tmp_path, setting, message):
    res = run_cli("validate", str(small_config(tmp_path, "train: {epochs: 1}")), "--set", setting)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.slow
def test_a_plateau_monitor_the_run_does_not_log_is_refused_before_any_run_directory(tmp_path):
    config = small_config(tmp_path, "train: {epochs: 1}", "optimizer: {name: adam, schedule: {name: plateau, params: "
                                                          "{monitor: val_acc}}}")
    res = run_cli("train", str(config))
    assert res.returncode == 2 and "optimizer.schedule.params.monitor: unknown metric 'val_acc'" in res.stderr
    assert not (tmp_path / "runs").exists()


# -- kill -9 mid-epoch, then --resume: bit-identical -------------------------------------------

RESUMABLE = {
    "ema_randaugment_erasing_accumulation_float16_one_cycle": (
        "train:\n  epochs: 3\n  backup_every_steps: 3\n  gradient_accumulation_steps: 2\n  precision: mixed_float16\n"
        "  techniques:\n"
        "    ema: {decay: 0.9}\n    randaugment: {}\n    random_erasing: {probability: 0.5}\n    mixup: {alpha: 0.2}",
        "optimizer: {name: sgd, learning_rate: 0.05, schedule: {name: one_cycle, params: {cycle_momentum: true}}}"),
    "trivialaugment_plateau": (
        "train:\n  epochs: 3\n  backup_every_steps: 3\n  techniques:\n    trivialaugment: {}\n"
        "    ema: {decay: 0.8, warmup: false}",
        "optimizer: {name: adam, learning_rate: 0.01, schedule: {name: plateau, params: "
        "{monitor: val_accuracy, min_delta: 1.0, patience: 1, factor: 0.5}}}"),
    "multistep": ("train:\n  epochs: 3\n  backup_every_steps: 3",
                  "optimizer: {name: adamw, learning_rate: 0.01, schedule: {name: multistep, params: {milestones: [1.5]}}}"),
    "step": ("train:\n  epochs: 3\n  backup_every_steps: 3",
             "optimizer: {name: adam, learning_rate: 0.01, schedule: {name: step, params: {step_epochs: 1}}}"),
    "exponential": ("train:\n  epochs: 3\n  backup_every_steps: 3",
                    "optimizer: {name: adam, learning_rate: 0.01, schedule: {name: exponential, params: {gamma: 0.5}}}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RESUMABLE))
def test_kill_mid_epoch_then_resume_is_bit_identical(tmp_path, case):
    from tests.test_reliability import assert_identical, metrics, position, start_and_stop

    train, optimizer = RESUMABLE[case]
    config = small_config(tmp_path, train, optimizer)
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    reference = Path(res.stdout.strip().splitlines()[-1])
    run, proc = start_and_stop(config, tmp_path / "runs" / "tiny",
                               lambda r: (position(r) or {}).get("epoch") == 1 and (position(r) or {}).get("step") == 3)
    where = position(run)
    assert proc.returncode == -signal.SIGKILL and (where["epoch"], where["step"]) == (1, 3)  # mid-epoch 2
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert_identical(reference, run)
    rows = metrics(reference)
    if "plateau" in case:  # it did reduce: the state that decided it came back from the backup
        assert [r["learning_rate"] for r in rows] == pytest.approx([0.01, 0.005, 0.0025])
    if "ema" in case:
        assert all(r["eval_weights"] == "ema" for r in rows)
    if "accumulation" in case:
        batch = json.loads((run / "run.json").read_text())["batch"]
        assert batch == {"size": 32, "gradient_accumulation_steps": 2, "effective": 64}


@pytest.mark.slow
def test_ema_weights_are_what_validation_checkpoints_and_evaluate_use(tmp_path):
    config = small_config(tmp_path, "train:\n  epochs: 2\n  techniques:\n    ema: {decay: 0.7}")
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    res = run_cli("evaluate", str(run), "--checkpoint", "last", "--json")
    assert res.returncode == 0, res.stderr
    scores = json.loads(res.stdout.splitlines()[-1])
    # last.keras holds the weights the last validation used: the EMA, not the training weights
    assert scores["accuracy"] == pytest.approx(rows[-1]["val_accuracy"], abs=1e-6)
    assert scores["loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-5)
    evaluated = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert evaluated["weights"] == "ema" and rows[-1]["eval_weights"] == "ema"
    plain = small_config(tmp_path, "train:\n  epochs: 2", name="plain")
    res = run_cli("train", str(plain))
    other = [json.loads(line) for line in (Path(res.stdout.strip().splitlines()[-1]) / "metrics.jsonl")
             .read_text().splitlines()]
    assert other[-1]["loss"] == rows[-1]["loss"]  # training itself is untouched by the average
    assert other[-1]["val_loss"] != rows[-1]["val_loss"]


# -- commands ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lr_find_writes_its_curve_and_suggestion_and_prints_the_directory_last(tmp_path):
    config = small_config(tmp_path, "train: {epochs: 1}")
    res = run_cli("lr-find", str(config), "--steps", "40", "--start", "1e-6", "--end", "1")
    assert res.returncode == 0, res.stderr
    directory = Path(res.stdout.strip().splitlines()[-1])
    assert directory.parent == tmp_path / "runs" / "lr-find" and (directory / "lr_find.png").stat().st_size > 1000
    result = json.loads((directory / "lr_find.json").read_text())
    assert 1e-6 <= result["suggested_lr"] <= 1 and result["rule"].startswith("steepest descent")
    assert len(result["lrs"]) == len(result["losses"]) == result["steps_run"] <= 40
    np.testing.assert_allclose(np.diff(np.log(result["lrs"])), np.log(1e6) / 39, rtol=1e-6)
    assert f"suggested learning rate {result['suggested_lr']:.3g}" in res.stdout
    assert not (tmp_path / "runs" / "tiny").exists()  # no run directory
    bad = run_cli("lr-find", str(config), "--start", "1", "--end", "0.1")
    assert bad.returncode == 2 and "need 0 < start < end" in bad.stderr


def test_lr_find_suggests_the_steepest_descent_before_the_blow_up():
    from nnrun.engine.lr_find import smooth, suggest

    lrs = list(np.logspace(-6, 1, 100))
    x = np.log10(lrs)
    losses = list(2.0 - 1.0 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > 0, 5 * x, 0))  # steepest at 1e-3
    result = suggest(lrs, smooth(losses, beta=0.0))
    assert 10 ** -3.3 < result["suggested_lr"] < 10 ** -2.7
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected from the first value


@pytest.mark.slow
def test_ablate_runs_paired_seeds_and_writes_the_table_with_intervals(tmp_path):
    config = small_config(tmp_path, "train:\n  epochs: 1\n  techniques:\n    mixup: {alpha: 0.2}\n    ema: {decay: 0.5}")
    res = run_cli("ablate", str(config), "--seeds", "2")
    assert res.returncode == 0, res.stderr
    directory = Path(res.stdout.strip().splitlines()[-1])
    assert directory == tmp_path / "runs" / "sweeps" / "tiny-ablation"
    table = json.loads((directory / "ablation.json").read_text())
    assert [r["variant"] for r in table] == ["full", "without mixup", "without ema"]
    for row in table:
        assert row["seeds"] == 2 and row["ci95"] is not None and set(row["values"]) == {"1", "2"}
    full = table[0]["values"]
    for row in table[1:]:
        paired = [row["values"][s] - full[s] for s in full]
        assert row["diff_to_full"] == pytest.approx(np.mean(paired))
        assert row["diff_ci95"] == pytest.approx(12.706 * np.std(paired, ddof=1) / math.sqrt(2))
    assert (directory / "ablation.csv").read_text().startswith("variant,seeds,metric,mean,ci95,diff_to_full")
    assert (directory / "ablation.png").stat().st_size > 1000 and "<h2>Ablation</h2>" in (directory / "report.html").read_text()
    assert "without mixup" in res.stdout
    again = run_cli("ablate", str(config), "--seeds", "2")  # the study is done: nothing trains again
    assert again.returncode == 0 and "nothing to run" in again.stderr

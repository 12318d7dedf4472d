"""Training techniques: the maths of each, and that they compose in one run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnrun.components.techniques.base import TechniqueContext
from nnrun.components.techniques.curriculum import CurriculumParams, pacing_fraction, rank_order
from nnrun.registry import get

pytestmark = pytest.mark.slow


def ctx(**kw):
    base = dict(epochs=6, batch_size=8, steps_per_epoch=4, image_size=8, label_mode="onehot")
    return TechniqueContext(**{**base, **kw})


def technique(name, params, **kw):
    comp = get("technique", name)
    return comp.builder(comp.params.model_validate(params), ctx(**kw))


def key(tf, epoch, step):
    from nnrun.engine.pipeline import batch_key

    return batch_key(tf, 0, tf.constant(epoch, tf.int64), tf.constant(step, tf.int64), 1)


def batch(tf, n=8):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((n, 8, 8, 3)), tf.float32)
    labels = tf.one_hot(tf.range(n), n)  # example i has class i: labels reveal the partner
    return images, labels


def test_mixup_is_a_convex_combination_with_matching_label_weights():
    import tensorflow as tf

    mix = technique("mixup", {"alpha": 0.4})
    images, labels = batch(tf)
    out_x, out_y = (t.numpy() for t in mix.batch_transform(images, labels, tf.constant(0, tf.int64), key(tf, 0, 0)))
    x = images.numpy()
    np.testing.assert_allclose(out_y.sum(axis=1), 1.0, atol=1e-6)
    for i in range(8):
        lam = out_y[i, i]
        partners = [j for j in range(8) if j != i and out_y[i, j] > 1e-6]
        assert len(partners) <= 1  # exactly two batch members (or the example with itself)
        j = partners[0] if partners else i
        if partners:
            assert out_y[i, j] == pytest.approx(1 - lam, abs=1e-6)
        np.testing.assert_allclose(out_x[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
    assert 0 < out_y.max(axis=1).min() < 1  # something was mixed


def test_mixup_lambda_varies_between_batches_and_is_repeatable():
    import tensorflow as tf

    mix = technique("mixup", {"alpha": 0.4})
    images, labels = batch(tf)
    a = mix.batch_transform(images, labels, tf.constant(0, tf.int64), key(tf, 0, 0))[1].numpy()
    b = mix.batch_transform(images, labels, tf.constant(0, tf.int64), key(tf, 0, 1))[1].numpy()
    again = mix.batch_transform(images, labels, tf.constant(0, tf.int64), key(tf, 0, 0))[1].numpy()
    assert not np.allclose(np.diag(a), np.diag(b))
    np.testing.assert_array_equal(a, again)  # keyed on (seed, epoch, step): a resumed run mixes the same


def test_mixup_switch_off_and_probability():
    import tensorflow as tf

    images, labels = batch(tf)
    off = technique("mixup", {"alpha": 0.4, "switch_off_epoch": 3})
    x, y = off.batch_transform(images, labels, tf.constant(2, tf.int64), key(tf, 2, 0))  # epoch 3 (1-based)
    np.testing.assert_array_equal(y.numpy(), labels.numpy())
    np.testing.assert_allclose(x.numpy(), images.numpy())
    never = technique("mixup", {"alpha": 0.4, "probability": 0.0})
    np.testing.assert_array_equal(never.batch_transform(images, labels, tf.constant(0, tf.int64),
                                                        key(tf, 0, 0))[1].numpy(), labels.numpy())


def test_cutmix_labels_follow_the_pasted_area():
    import tensorflow as tf

    cut = technique("cutmix", {"alpha": 1.0})
    images, labels = batch(tf)
    out_x, out_y = (t.numpy() for t in cut.batch_transform(images, labels, tf.constant(0, tf.int64), key(tf, 0, 3)))
    x = images.numpy()
    np.testing.assert_allclose(out_y.sum(axis=1), 1.0, atol=1e-6)
    for i in range(8):
        own = np.all(np.isclose(out_x[i], x[i]), axis=-1)
        assert out_y[i, i] == pytest.approx(own.mean(), abs=1e-6) or np.allclose(out_y[i], labels.numpy()[i])


def test_mixing_needs_one_hot_image_batches():
    from nnrun.errors import ConfigError

    with pytest.raises(ConfigError, match="one-hot"):
        technique("mixup", {}, label_mode="sparse")
    with pytest.raises(ConfigError, match="image"):
        technique("cutmix", {}, image_size=None)


@pytest.mark.parametrize("pacing", ["linear", "root", "step", "exponential"])
def test_pacing_functions_go_from_start_to_one(pacing):
    p = CurriculumParams(pacing=pacing, start=0.25, full_at_epoch=5, step_count=2)
    values = [pacing_fraction(p, e) for e in range(8)]
    assert values[0] == pytest.approx(0.25)
    assert values[4:] == [1.0] * 4
    assert all(a <= b for a, b in zip(values, values[1:]))
    expected_mid = {"linear": 0.25 + 0.75 * 0.5, "root": 0.25 + 0.75 * 0.5 ** 0.5, "step": 0.25 + 0.75 * 0.5,
                    "exponential": 0.25 * 4 ** 0.5}[pacing]
    assert values[2] == pytest.approx(expected_mid)


def test_class_balanced_ranking_interleaves_classes():
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3])
    labels = np.array([0, 0, 0, 1, 1, 1])
    order = rank_order(scores, labels, class_balanced=True)
    assert set(labels[order[:2]]) == {0, 1}  # easiest of each class first
    assert list(order[:2]) in ([1, 3], [3, 1])
    assert list(rank_order(scores, labels, class_balanced=False)[:2]) == [1, 3]


def test_curriculum_epoch_draws_only_from_the_easiest_fraction_and_scores_once():
    from nnrun.components.data.base import DataBundle, Split
    from nnrun.engine.pipeline import train_dataset

    n = 64
    x = np.repeat(np.arange(n, dtype=np.float32), 4).reshape(n, 2, 2, 1)  # image value = index
    difficulty = np.random.default_rng(1).random(n).astype(np.float32)
    split = Split(x, np.zeros(n, np.int32), difficulty=difficulty)
    data = DataBundle({"train": split, "val": split}, (2, 2, 1), 1)
    cur = technique("curriculum", {"start": 0.25, "full_at_epoch": 4, "class_balanced": False},
                    epochs=5, batch_size=8, image_size=2)
    calls = []
    for _ in range(2):
        cur.prepare(cur.ctx, data, lambda epochs: calls.append(epochs))
    assert cur.score_calls == 1
    rank = np.argsort(np.argsort(difficulty))  # 0 = easiest
    ds = train_dataset(split, batch_size=8, seed=3, num_classes=1, label_mode="onehot",
                       first_epoch=0, last_epoch=5, techniques=[cur])
    seen: dict[int, list] = {}
    for step, (images, _) in enumerate(ds):
        seen.setdefault(step // 8, []).extend(images.numpy()[:, 0, 0, 0].astype(int).tolist())
    assert cur.score_calls == 1  # iterating all epochs scored nothing again
    for epoch, indices in seen.items():
        k = int(np.ceil(pacing_fraction(cur.p, epoch) * n))
        assert len(indices) == 64  # constant steps per epoch
        assert rank[indices].max() < max(k, 8), (epoch, k)
        assert len(set(indices)) == min(max(k, 8), 64)  # uniform over the whole pool
    assert not calls  # difficulty came from the data set, not from a warm-up model


def test_progressive_resizing_delivers_the_scheduled_size_each_epoch():
    from nnrun.components.data.base import Split
    from nnrun.engine.pipeline import eval_dataset, train_dataset

    pr = technique("progressive_resizing", {"sizes": [8, 12, 16], "epochs": [2, 1, 1]}, epochs=5, image_size=16)
    split = Split(np.zeros((16, 16, 16, 3), np.float32), np.zeros(16, np.int32))
    ds = train_dataset(split, batch_size=8, seed=0, num_classes=2, label_mode="onehot",
                       first_epoch=0, last_epoch=5, techniques=[pr])
    sizes = [images.shape[1] for images, _ in ds]
    assert sizes == [8, 8, 8, 8, 12, 12, 16, 16, 16, 16]  # 2 steps per epoch; last stage runs to the end
    assert [pr.epoch_state(e)["image_size"] for e in range(5)] == [8, 8, 12, 16, 16]
    assert next(iter(eval_dataset(split, batch_size=8, num_classes=2, label_mode="onehot",
                                  techniques=[pr])))[0].shape[1] == 16


def test_mixed_precision_policy_keeps_logits_and_loss_in_float32():
    import keras

    from nnrun.components.data.base import DataBundle
    from nnrun.components.models.resnet import ResNetParams, build

    data = DataBundle({}, (16, 16, 3), 4)
    try:
        for policy in ("mixed_bfloat16", "mixed_float16"):
            keras.config.set_dtype_policy(policy)
            model = build(ResNetParams(stages=[8], blocks_per_stage=1), data)
            conv = model.get_layer("stem_conv")
            assert conv.compute_dtype == policy.split("_")[1] and conv.variable_dtype == "float32"
            assert model.get_layer("logits").compute_dtype == "float32"
            model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
            out = model(np.zeros((2, 16, 16, 3), np.float32))
            assert keras.backend.standardize_dtype(out.dtype) == "float32"
            loss = model.loss(np.eye(4, dtype=np.float32)[:2], out)
            assert keras.backend.standardize_dtype(loss.dtype) == "float32"
            scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert scaled == (policy == "mixed_float16")  # loss scaling for float16 only
    finally:
        keras.config.set_dtype_policy("float32")


def test_techniques_compose_in_one_run(tiny_config, cli):
    res = cli("train", str(tiny_config), "--set", "train.epochs=4", "--set",
              "train.techniques={mixup: {alpha: 0.2, switch_off_epoch: 4}, "
              "curriculum: {start: 0.5, full_at_epoch: 3}, "
              "progressive_resizing: {sizes: [8, 16], epochs: [2, 2], mixup_alpha: [0.1, 0.3]}, "
              "stochastic_depth: {rate: 0.1}, mixed_precision: {policy: mixed_bfloat16}}")
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    assert set(record["techniques"]) == {"mixup", "curriculum", "progressive_resizing", "stochastic_depth",
                                         "mixed_precision"}
    assert record["dtype_policy"] == "mixed_bfloat16"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["image_size"] for r in rows] == [8, 8, 16, 16]
    assert [r["curriculum_fraction"] for r in rows] == [0.5, 0.75, 1.0, 1.0]
    assert [r["mixup_alpha"] for r in rows] == [0.1, 0.1, 0.3, 0.0]
    assert rows[-1]["step"] == 4 * 16  # one fit, one optimizer: steps continue across sizes
    assert (run / "curriculum_scores.npy").is_file()


def test_evaluate_uses_the_training_eval_size(tiny_config, cli):
    """Progressive resizing validated at 12 px (native 16): `nnrun evaluate` must score the same way."""
    res = cli("train", str(tiny_config), "--set",
              "train.techniques={progressive_resizing: {sizes: [8, 12], epochs: [1, 2]}}")
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    assert record["techniques"]["progressive_resizing"]["eval_size"] == 12
    final = record["final_metrics"]  # the val set is class-balanced: balanced accuracy == accuracy
    assert final["val_balanced_accuracy"] == pytest.approx(final["val_accuracy"], abs=1e-6)
    scores = cli("evaluate", str(run), "--json")
    assert scores.returncode == 0, scores.stderr
    assert json.loads(scores.stdout)["accuracy"] == pytest.approx(record["final_metrics"]["best_val_accuracy"],
                                                                  abs=1e-6)

"""Focal and contrastive losses against closed forms on hand-computed inputs."""

from __future__ import annotations


import numpy as np
import pytest

from nnrun import registry
from nnrun.errors import ConfigError

keras = pytest.importorskip("keras")


def loss(name: str, **params):
    component = registry.get("loss", name)
    return component.builder(component.params.model_validate(params))


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_categorical_focal_matches_a_hand_computed_value():
    # logits [2, 1, 0], true class 0: p = e^2 / (e^2 + e + 1) = 0.665241;
    # FL = 0.25 * (1 - p)^2 * -ln p = 0.25 * 0.112064 * 0.407606 = 0.011420
    value = loss("focal", gamma=2.0, alpha=0.25)(np.array([[1.0, 0, 0]]), np.array([[2.0, 1.0, 0.0]]))
    assert float(value) == pytest.approx(0.011420, abs=2e-6)


def test_categorical_focal_equals_the_closed_form_with_per_class_alpha():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)) * 2
    y = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    alpha, gamma = np.array([0.2, 1.0, 3.0]), 1.5
    p = softmax(logits)
    expected = np.mean(np.sum(-alpha * y * (1 - p) ** gamma * np.log(p), axis=1))
    got = loss("focal", gamma=gamma, alpha=alpha.tolist())(y, logits.astype("float32"))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_binary_focal_equals_the_closed_form_with_alpha():
    logits = np.array([[1.5, -0.5], [-2.0, 0.3]], "float32")
    y = np.array([[1.0, 0.0], [1.0, 1.0]], "float32")
    alpha, gamma = 0.25, 2.0
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    expected = np.mean(-alpha_t * (1 - p_t) ** gamma * np.log(p_t))
    assert float(loss("focal", mode="binary", gamma=gamma, alpha=alpha)(y, logits)) == pytest.approx(expected, rel=1e-5)
    unweighted = np.mean(-(1 - p_t) ** gamma * np.log(p_t))
    assert float(loss("focal", mode="binary", gamma=gamma)(y, logits)) == pytest.approx(unweighted, rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(5, 4)) * 3).astype("float32")
    y = np.eye(4, dtype="float32")[[0, 3, 1, 2, 3]]
    focal = float(loss("focal", gamma=0.0)(y, logits))
    assert focal == pytest.approx(float(np.mean(-np.sum(y * np.log(softmax(logits.astype(np.float64))), axis=1))),
                                  rel=1e-5)
    assert focal == pytest.approx(float(keras.losses.CategoricalCrossentropy(from_logits=True)(y, logits)), rel=1e-5)
    binary = float(loss("focal", mode="binary", gamma=0.0)(y, logits))
    assert binary == pytest.approx(float(keras.losses.BinaryCrossentropy(from_logits=True)(y, logits)), rel=1e-5)


def test_focal_down_weights_easy_examples():
    easy, hard = np.array([[4.0, 0, 0]], "float32"), np.array([[0.5, 0, 0]], "float32")
    y = np.array([[1.0, 0, 0]], "float32")
    ce, fl = loss("focal", gamma=0.0), loss("focal", gamma=2.0)
    assert float(fl(y, easy)) / float(ce(y, easy)) < float(fl(y, hard)) / float(ce(y, hard)) < 1


@pytest.mark.parametrize("params", [{"mode": "binary", "alpha": [0.5, 0.5]}, {"mode": "binary", "alpha": 1.5},
                                    {"alpha": -1.0}, {"gamma": -1}])
def test_focal_rejects_bad_parameters(params):
    from nnrun.config.resolve import validate_params

    with pytest.raises(ConfigError, match=r"^loss\.params"):
        validate_params("loss", "focal", params, ("loss", "params"))


def embeddings_at(distances):
    """Pairs of 2-D embeddings whose Euclidean distances are `distances` (3-4-5 triangles)."""
    d = np.asarray(distances, "float32")
    first = np.zeros((len(d), 2), "float32") + 0.1
    second = first + np.stack([0.6 * d, 0.8 * d], axis=1)
    return np.stack([first, second], axis=1)


def test_contrastive_loss_matches_hand_computed_pairs():
    from nnrun.components.custom_objects.pairs import ContrastiveLoss

    y = np.array([1, 0, 0, 1], "float32")  # 1 = same
    pred = embeddings_at([0.5, 0.3, 1.5, 0.0])
    per_pair = np.asarray(ContrastiveLoss(margin=1.0, reduction=None)(y, pred))
    # same at d=0.5: 0.5 * 0.25 = 0.125; different at d=0.3, m=1: 0.5 * 0.7^2 = 0.245;
    # different beyond the margin: 0; same at d=0: 0 (up to the 1e-12 guard)
    np.testing.assert_allclose(per_pair, [0.125, 0.245, 0.0, 0.0], atol=1e-6)
    built = loss("contrastive", margin=1.0)
    assert float(built(y, pred)) == pytest.approx((0.125 + 0.245) / 4, abs=1e-6)
    wide = loss("contrastive", margin=2.0)  # different at d=1.5, m=2: 0.5 * 0.25
    assert float(wide(np.array([0.0]), embeddings_at([1.5]))) == pytest.approx(0.125, abs=1e-6)


def test_contrastive_gradient_is_finite_when_embeddings_coincide():
    import tensorflow as tf

    from nnrun.components.custom_objects.pairs import ContrastiveLoss

    pred = tf.Variable(np.ones((2, 2, 3), "float32"))
    with tf.GradientTape() as tape:
        value = ContrastiveLoss(margin=1.0)(np.array([1.0, 0.0]), pred)
    grad = tape.gradient(value, pred).numpy()
    assert np.all(np.isfinite(grad)) and float(value) == pytest.approx(0.25, abs=1e-6)  # (0 + 0.5) / 2


def test_pair_accuracy_metric_thresholds_the_distance():
    from nnrun.components.custom_objects.pairs import PairAccuracy

    metric = PairAccuracy(threshold=0.5)
    metric.update_state(np.array([1, 1, 0, 0]), embeddings_at([0.2, 0.7, 0.9, 0.4]))
    assert float(metric.result()) == pytest.approx(0.5)  # right: 0.2 same, 0.9 different

"""Explainers against hand-built Keras models whose correct maps are known (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from nnrun.errors import UsageError


@pytest.fixture(scope="module")
def keras():
    from nnrun.engine.runtime import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(3)
    return keras


def conv_gap_dense(keras, channels=5, classes=3, stride=1, size=8):
    """input -> conv (ReLU) -> global average pool -> dense logits: alpha_k = w_kc / (H * W)."""
    inputs = keras.Input((size, size, 2), name="image")
    conv = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(conv)
    logits = keras.layers.Dense(classes, name="logits")(pooled)
    return keras.Model(inputs, logits)


def expected_cam(keras, model, x, targets):
    """Grad-CAM from the closed form for conv -> GAP -> dense, computed without gradients."""
    activations = np.asarray(keras.Model(model.inputs[0], model.get_layer("conv").output)(x))
    h, w = activations.shape[1:3]
    dense = model.get_layer("logits").kernel.numpy()  # (K, classes)
    alpha = dense[:, targets].T / (h * w)  # (N, K)
    return np.maximum(np.einsum("nhwk,nk->nhw", activations, alpha), 0)


def images(n=4, size=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 2)).astype(np.float32)


# -- Grad-CAM -------------------------------------------------------------------------------

def test_gradcam_equals_the_closed_form_for_conv_gap_dense(keras):
    from nnrun.explain.gradcam import CAM

    model = conv_gap_dense(keras)
    x = images()
    for target in range(3):
        targets = np.full(len(x), target, np.int32)
        result = CAM(model, None).explain(x, targets)
        want = expected_cam(keras, model, x, targets)
        np.testing.assert_allclose(result.raw, want, rtol=1e-5, atol=1e-6)
        peak = want.max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(result.heatmap, np.where(peak > 0, want / np.maximum(peak, 1e-12), 0), atol=1e-5)
        assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1


def test_gradcam_per_sample_targets_match_one_by_one_and_upsample(keras):
    from nnrun.explain.gradcam import CAM

    model = conv_gap_dense(keras, stride=2, size=12)  # 6x6 activations, 12x12 input
    dense = model.get_layer("logits")
    dense.kernel.assign(np.random.default_rng(4).uniform(0, 1, dense.kernel.shape))  # non-empty maps
    x = images(5, size=12, seed=1)
    targets = np.array([0, 2, 1, 2, 0], np.int32)
    cam = CAM(model, "conv")
    batch = cam.explain(x, targets, batch_size=5).heatmap
    assert batch.shape == (5, 12, 12)
    one_by_one = np.concatenate([cam.explain(x[i:i + 1], targets[i:i + 1], batch_size=1).heatmap for i in range(5)])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-6)
    assert (batch.max(axis=(1, 2)) == 1).all()
    assert not np.allclose(batch[1], cam.explain(x[1:2], np.array([0], np.int32)).heatmap[0])  # target matters


def test_all_zero_map_stays_zero_without_nan(keras):
    from nnrun.explain.gradcam import CAM

    model = conv_gap_dense(keras)
    dense = model.get_layer("logits")
    dense.kernel.assign(-np.abs(dense.kernel.numpy()))  # every channel votes against every class
    result = CAM(model, None).explain(images(), np.zeros(4, np.int32))
    assert np.isfinite(result.heatmap).all() and (result.heatmap == 0).all()


def test_gradcam_pp_weights_follow_the_formula(keras):
    from nnrun.explain.gradcam_pp import gradcam_pp_weights
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (2, 3, 3, 4)).astype(np.float32)
    g = rng.normal(0, 1, (2, 3, 3, 4)).astype(np.float32)
    g[0, 0, 0, 0] = 0.0
    total = a.sum(axis=(1, 2), keepdims=True)
    den = 2 * g**2 + total * g**3
    alpha = np.where(g != 0, g**2 / np.where(den != 0, den, 1), 0)
    want = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    np.testing.assert_allclose(gradcam_pp_weights(tf, tf.constant(a), tf.constant(g)).numpy(), want, rtol=1e-5)


def test_layer_autodetection_reaches_into_a_nested_submodel(keras):
    """Outer model = backbone sub-model (convs + pool) -> dense; the last 4-D layer is inside."""
    from nnrun.explain.gradcam import CAM

    inner_in = keras.Input((8, 8, 2))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inner_in)
    c2 = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(c1)
    backbone = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D(name="gap")(c2), name="backbone")
    outer_in = keras.Input((8, 8, 2))
    nested = keras.Model(outer_in, keras.layers.Dense(3, name="logits")(backbone(outer_in)), name="nested")

    # The same network, flat, sharing the layers (so the same weights).
    flat_in = keras.Input((8, 8, 2))
    flat = keras.Model(flat_in, nested.get_layer("logits")(backbone.get_layer("gap")(
        backbone.get_layer("conv2")(backbone.get_layer("conv1")(flat_in)))))

    x, targets = images(3, seed=2), np.array([0, 1, 2], np.int32)
    auto = CAM(nested, None)
    assert auto.info["layer"] == "backbone/conv2"
    maps = auto.explain(x, targets).heatmap
    assert maps.max() > 0
    np.testing.assert_allclose(maps, CAM(flat, "conv2").explain(x, targets).heatmap, atol=1e-5)
    np.testing.assert_allclose(CAM(nested, "conv1").explain(x, targets).heatmap,  # bare inner name
                               CAM(flat, "conv1").explain(x, targets).heatmap, atol=1e-5)


def test_bad_layers_are_usage_errors(keras):
    from nnrun.explain.gradcam import CAM

    model = conv_gap_dense(keras)
    with pytest.raises(UsageError, match=r"layer 'logits' has output shape \(None, 3\), not 4-D"):
        CAM(model, "logits")
    with pytest.raises(UsageError, match="has no layer 'cnv'; did you mean 'conv'"):
        CAM(model, "cnv")
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(UsageError, match="no layer with a 4-D output"):
        CAM(dense_only, None)


# -- integrated gradients -------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["gauss-legendre", "trapezoid"])
def test_quadrature_weights_sum_to_one(rule):
    from nnrun.explain.integrated_gradients import quadrature

    for steps in (2, 7, 64):
        nodes, weights = quadrature(steps, rule)
        assert abs(weights.sum() - 1) < 1e-12 and nodes.min() >= 0 and nodes.max() <= 1
        assert abs((weights * nodes**2).sum() - 1 / 3) < (1e-12 if rule == "gauss-legendre" else 1 / steps)


def test_ig_of_a_linear_model_is_w_times_delta(keras):
    from nnrun.explain.integrated_gradients import IGParams, IntegratedGradients

    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(inputs)))
    x = images(2, size=4)
    targets = np.array([1, 2], np.int32)
    result = IntegratedGradients(model, IGParams(steps=5, score="logit", baseline="0.25")).explain(x, targets)
    w = model.get_layer("logits").kernel.numpy()[:, targets].T.reshape(2, 4, 4, 2)
    np.testing.assert_allclose(result.raw, w * (x - 0.25), atol=1e-6)
    assert result.per_image["completeness_error"].max() < 1e-5


def small_cnn(keras, classes=3):
    inputs = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="first")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="tanh")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x))


def test_ig_completeness_on_a_small_nonlinear_model_and_chunking(keras):
    from nnrun.explain.integrated_gradients import IGParams, IntegratedGradients

    model = small_cnn(keras)
    x = images(4, seed=5) * 3
    targets = np.array([0, 1, 2, 0], np.int32)
    ig = IntegratedGradients(model, IGParams(steps=64))
    result = ig.explain(x, targets, batch_size=1000)
    error = result.per_image["completeness_error"]
    gap = result.per_image["score"] - result.per_image["baseline_score"]
    assert np.abs(gap).min() > 1e-3  # the check is meaningful
    assert error.max() < 0.01, error
    np.testing.assert_allclose(result.raw.reshape(4, -1).sum(1), gap, rtol=0.01)
    chunked = ig.explain(x, targets, batch_size=7).raw  # chunks cross image boundaries
    np.testing.assert_allclose(chunked, result.raw, rtol=1e-4, atol=1e-7)
    # On a smooth model Gauss-Legendre beats the (correctly weighted) trapezoid rule.
    trapezoid = IntegratedGradients(model, IGParams(steps=64, quadrature="trapezoid"))
    assert error.max() < trapezoid.explain(x, targets).per_image["completeness_error"].max() < 0.05


def test_baselines():
    from nnrun.explain.integrated_gradients import IGParams, make_baseline

    x = images(2, size=16)
    assert (make_baseline(x, IGParams(baseline="black")) == 0).all()
    assert (make_baseline(x, IGParams(baseline="0.5")) == 0.5).all()
    blur = make_baseline(x, IGParams(baseline="blur"))
    assert blur.shape == x.shape and blur.std() < 0.5 * x.std()
    np.testing.assert_allclose(blur.mean(), x.mean(), atol=0.02)
    flat = np.full((1, 8, 8, 1), 0.3, np.float32)
    np.testing.assert_allclose(make_baseline(flat, IGParams(baseline="blur")), flat, atol=1e-6)
    noise = make_baseline(x, IGParams(baseline="uniform"))
    assert noise.min() >= x.min() and noise.max() <= x.max() and noise.std() > 0.2
    with pytest.raises(ValueError, match="black, blur, uniform or a number"):
        IGParams(baseline="white")


# -- SmoothGrad -----------------------------------------------------------------------------

def test_smoothgrad_averages_the_base_explainer(keras):
    from nnrun import registry
    from nnrun.explain.smoothgrad import SmoothGradParams

    build = registry.get("explainer", "smoothgrad").builder
    model = small_cnn(keras)
    x, targets = images(3, seed=7), np.array([0, 1, 2], np.int32)
    plain = registry.get("explainer", "gradient").builder(
        registry.get("explainer", "gradient").params(), model).explain(x, targets)
    no_noise = build(SmoothGradParams(samples=3, noise=0.0), model).explain(x, targets)
    np.testing.assert_allclose(no_noise.raw, plain.raw, rtol=1e-5, atol=1e-7)
    smooth = build(SmoothGradParams(samples=8, noise=0.2), model).explain(x, targets)
    assert not np.allclose(smooth.raw, plain.raw)
    cam = build(SmoothGradParams(base="gradcam", samples=4, base_params={"layer": "first"}), model)
    assert cam.info["layer"] == "first" and cam.explain(x, targets).heatmap.shape == (3, 8, 8)


# -- checks ---------------------------------------------------------------------------------

def test_pointing_game_tolerance_and_empty_masks():
    from nnrun.explain.checks import pointing_hits, tolerance

    assert tolerance(224, 224) == 15 and tolerance(32, 32) == 2 and tolerance(8, 8) == 1
    maps = np.zeros((3, 32, 32), np.float32)
    maps[:, 10, 10] = 1.0
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 10, 10] = True  # on the object
    masks[1, 12, 10] = True  # 2 px away: within tolerance
    masks[2] = False  # empty: never a hit
    assert pointing_hits(maps, masks).tolist() == [True, True, False]
    assert pointing_hits(maps, masks, tol=1).tolist() == [True, False, False]


def test_spearman_with_ties_and_constant_maps():
    from nnrun.explain.checks import spearman

    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert spearman(a, a * 10 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # Ties share ranks: ranks of [0, 0, 1, 2] are [1.5, 1.5, 3, 4]; Pearson of the ranks.
    ra, rb = np.array([1.5, 1.5, 3, 4]), np.array([1, 2, 4, 3])
    assert spearman(np.array([0, 0, 1, 2]), np.array([1, 2, 4, 3])) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert np.isnan(spearman(np.zeros(4), a))


# -- target selection and options -----------------------------------------------------------

def test_target_selection():
    from nnrun.explain.command import parse_target, resolve_targets

    predicted, labels = np.array([2, 0, 1]), np.array([2, 1, 1])
    assert resolve_targets(parse_target("predicted"), predicted, labels, 3).tolist() == [2, 0, 1]
    assert resolve_targets(parse_target("true"), predicted, labels, 3).tolist() == [2, 1, 1]
    assert resolve_targets(parse_target("1"), predicted, labels, 3).tolist() == [1, 1, 1]
    with pytest.raises(UsageError, match=r"--target 3 is out of range: the model has 3 classes \(0..2\)"):
        resolve_targets(parse_target("3"), predicted, labels, 3)
    with pytest.raises(UsageError, match="out of range"):
        resolve_targets(-1, predicted, labels, 3)
    with pytest.raises(UsageError, match="--target must be predicted, true or a class index"):
        parse_target("best")


def test_options_are_checked_per_method():
    from nnrun.explain.command import explainer_component

    _, params = explainer_component("integrated-gradients", {"steps": 8, "layer": None})
    assert params.steps == 8
    with pytest.raises(UsageError, match="--layer does not apply to the integrated-gradients explainer"):
        explainer_component("integrated-gradients", {"layer": "conv"})
    with pytest.raises(UsageError, match="--steps: Input should be greater than or equal to 1"):
        explainer_component("integrated-gradients", {"steps": 0})
    with pytest.raises(UsageError, match="unknown explainer 'gradcan'; did you mean 'gradcam'"):
        explainer_component("gradcan", {})
    _, params = explainer_component("smoothgrad", {"base": "gradcam", "layer": "conv", "samples": 2})
    assert params.base_params == {"layer": "conv"} and params.samples == 2


def test_composite_gauss_legendre_is_more_robust_to_a_sharp_rise():
    """The softmax along an IG path often rises in a narrow window of alpha: there a composite
    rule beats one global rule, and on smooth integrands both are exact to ~1e-9."""
    from nnrun.explain.integrated_gradients import quadrature

    def error(panels, slope):
        nodes, weights = quadrature(64, "gauss-legendre", panels)
        assert len(nodes) == 64 and abs(weights.sum() - 1) < 1e-12
        assert np.all(np.diff(nodes) > 0) and nodes.min() > 0 and nodes.max() < 1
        s = 1 / (1 + np.exp(-slope * (nodes - 0.37)))
        exact = 1 / (1 + np.exp(-slope * 0.63)) - 1 / (1 + np.exp(slope * 0.37))
        return abs((weights * slope * s * (1 - s)).sum() - exact)

    assert error(1, 30) < 1e-9 and error(4, 30) < 1e-8
    assert error(4, 100) < error(1, 100) / 2
    nodes, weights = quadrature(10, "gauss-legendre", 3)  # uneven split: still 10 nodes summing to 1
    assert len(nodes) == 10 and abs(weights.sum() - 1) < 1e-12

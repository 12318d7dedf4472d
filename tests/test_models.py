"""Maths of the issue-3 models: ResNet blocks and stochastic depth, attention pooling,
the transformer's padding invariance, and the siamese model's shared encoder. Tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from nnrun import registry
from nnrun.components.data.base import DataBundle

keras = pytest.importorskip("keras")


def build(name: str, data: DataBundle, **params):
    component = registry.get("model", name)
    return component.builder(component.params.model_validate(params), data)


def images(shape=(32, 32, 3), classes=4, **meta):
    return DataBundle({}, shape, classes, meta=meta)


# ---------------------------------------------------------------- ResNet


@pytest.mark.parametrize("block, out_channels", [("basic", 16), ("bottleneck", 64)])
@pytest.mark.parametrize("size, halved", [(8, 4), (7, 4)])
def test_strided_block_halves_size_and_projection_carries_the_stride(block, out_channels, size, halved):
    from nnrun.components.models.resnet import residual_block

    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, residual_block(inputs, 16, 2, block, 0.0, False, "b"))
    out = model(np.random.default_rng(0).normal(size=(2, size, size, 8)).astype("float32"))
    assert out.shape == (2, halved, halved, out_channels)
    proj = model.get_layer("b_proj_conv")
    assert proj.strides == (2, 2) and proj.kernel_size == (1, 1)
    strided = model.get_layer("b_a_conv" if block == "basic" else "b_b_conv")  # bottleneck: stride on the 3x3
    assert strided.strides == (2, 2)
    assert isinstance(model.get_layer("b_proj_bn"), keras.layers.BatchNormalization)


def test_identity_shortcut_when_shape_and_stride_match():
    from nnrun.components.models.resnet import residual_block

    inputs = keras.Input((None, None, 16))
    model = keras.Model(inputs, residual_block(inputs, 16, 1, "basic", 0.0, False, "b"))
    assert "b_proj_conv" not in [layer.name for layer in model.layers]


def test_stages_halve_the_feature_maps_of_any_image_size():
    model = build("resnet", images(), stages=[8, 16, 32], blocks_per_stage=1)
    probe = keras.Model(model.input, [model.get_layer(f"s{i}b1_out").output for i in (1, 2, 3)])
    for size in (32, 24):
        outs = probe(np.zeros((1, size, size, 3), "float32"))
        assert [o.shape[1] for o in outs] == [size, size // 2, size // 4]


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_standard_resnets_have_torchvisions_parameter_counts():
    # torchvision counts trainable parameters only (BN running stats are buffers).
    r50 = build("resnet", images((224, 224, 3), 1000), block="bottleneck", stem="imagenet",
                stages=[64, 128, 256, 512], blocks_per_stage=[3, 4, 6, 3])
    assert _trainable(r50) == 25_557_032
    r18 = build("resnet", images((224, 224, 3), 1000), block="basic", stem="imagenet",
                stages=[64, 128, 256, 512], blocks_per_stage=[2, 2, 2, 2])
    assert _trainable(r18) == 11_689_512
    reference = keras.applications.ResNet50(weights=None)  # same net, but its convs carry biases
    conv_biases = sum(int(np.prod(layer.bias.shape)) for layer in reference.layers
                      if isinstance(layer, keras.layers.Conv2D) and layer.use_bias)
    assert _trainable(reference) - conv_biases == _trainable(r50)


def test_stochastic_depth_rates_rise_linearly_to_the_last_block():
    model = build("resnet", images(), stages=[8, 16], blocks_per_stage=[2, 2], stochastic_depth=0.4)
    drops = [layer for layer in model.layers if layer.name.endswith("_drop_path")]
    assert [layer.name for layer in drops] == ["s1b1_drop_path", "s1b2_drop_path", "s2b1_drop_path", "s2b2_drop_path"]
    survival = [1 - layer.rate for layer in drops]
    assert survival == pytest.approx([0.9, 0.8, 0.7, 0.6])  # 1 - rate * l / L; last = 1 - rate


def test_stochastic_depth_is_identity_at_inference():
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    kwargs = dict(stages=[8, 16], blocks_per_stage=2, zero_init_residual=False)  # branches not zero
    keras.utils.set_random_seed(0)
    dropped = build("resnet", images(), stochastic_depth=0.5, **kwargs)
    plain = build("resnet", images(), stochastic_depth=0.0, **kwargs)
    for layer in plain.layers:  # copy by layer name: the Dropout layers change the graph order
        layer.set_weights(dropped.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(dropped(x, training=False), plain(x, training=False), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dropped(x, training=False), dropped(x, training=False))


def test_stochastic_depth_drops_whole_branches_per_sample_in_training():
    from nnrun.components.models.resnet import residual_block

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, residual_block(inputs, 4, 1, "basic", 0.5, False, "b"))
    drop = model.get_layer("b_drop_path")
    probe = keras.Model(inputs, [drop.input, drop.output])
    x = np.random.default_rng(2).normal(size=(64, 6, 6, 4)).astype("float32")
    branch, kept = (np.asarray(t) for t in probe(x, training=True))
    flat_b, flat_k = branch.reshape(64, -1), kept.reshape(64, -1)
    dropped = np.all(flat_k == 0, axis=1)
    assert np.all(np.abs(flat_b).max(axis=1) > 0)  # the branch itself is never zero
    np.testing.assert_allclose(flat_k[~dropped], flat_b[~dropped] / 0.5, rtol=1e-5, atol=1e-6)  # kept: 1/keep
    assert 0.25 < dropped.mean() < 0.75  # ~half the samples, drawn per sample


# ---------------------------------------------------------------- additive attention


def _attention(**params):
    component = registry.get("layer", "additive_attention")
    return component.builder(component.params.model_validate(params))


def test_attention_weights_follow_the_bahdanau_formula_and_use_the_query():
    layer = _attention(units=6, learned_query=False)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 5, 4)).astype("float32")
    q1, q2 = rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    context1, weights1 = (np.asarray(t) for t in layer(values, q1))
    context2, weights2 = (np.asarray(t) for t in layer(values, q2))
    assert np.abs(context1 - context2).max() > 1e-4 and np.abs(weights1 - weights2).max() > 1e-4
    w1, (w2, b2), v = layer.w1.kernel.numpy(), (layer.w2.kernel.numpy(), layer.w2.bias.numpy()), layer.v.kernel.numpy()
    scores = (np.tanh(values @ w1 + (q1 @ w2 + b2)[:, None, :]) @ v)[..., 0]
    expected = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights1, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context1, np.einsum("bt,btd->bd", expected, values), rtol=1e-5, atol=1e-6)


def test_learned_query_is_used():
    layer = _attention(units=6)
    values = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    before = np.asarray(layer(values)[1])
    layer.query.assign(layer.query.numpy() + 1.0)
    assert np.abs(np.asarray(layer(values)[1]) - before).max() > 1e-4


def test_attention_ignores_masked_positions():
    layer = _attention(units=6)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 6, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    context, weights = (np.asarray(t) for t in layer(values, mask=mask))
    assert np.all(weights[0, 4:] == 0) and np.allclose(weights.sum(axis=1), 1)
    changed = values.copy()
    changed[0, 4:] = 100.0  # garbage at the masked positions
    context2, weights2 = (np.asarray(t) for t in layer(changed, mask=mask))
    np.testing.assert_allclose(context2[0], context[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(weights2, weights, rtol=1e-6, atol=1e-7)
    unmasked = np.asarray(layer(values[:1, :4])[0])  # same as if the padding were not there
    np.testing.assert_allclose(unmasked[0], context[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- transformer


def _tokens(n=8, max_length=24, seed=0):
    from nnrun.components.data.sequences import SequencesParams, generate

    return generate(n, SequencesParams(max_length=max_length, seed=seed), 0).x


@pytest.mark.parametrize("pooling", ["cls", "mean", "attention"])
def test_transformer_output_does_not_change_when_padding_is_appended(pooling):
    keras.utils.set_random_seed(0)
    data = images((24,), 2, vocab_size=16, max_length=24)
    model = build("transformer", data, dim=16, num_heads=2, mlp_dim=32, num_layers=2, pooling=pooling,
                  max_length=40)
    x = _tokens()
    longest = int((x != 0).sum(axis=1).max())
    base = np.asarray(model(x[:, :longest], training=False))
    for extra in (x, np.pad(x, ((0, 0), (0, 16)))):  # padding up to 24, then up to 40 tokens
        np.testing.assert_allclose(np.asarray(model(extra, training=False)), base, rtol=1e-5, atol=1e-5)


def test_transformer_is_built_from_pre_ln_mha_blocks():
    data = images((24,), 2, vocab_size=16, max_length=24)
    model = build("transformer", data, dim=16, num_heads=2, mlp_dim=32, num_layers=2)
    attention = [layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert [layer.name for layer in attention] == ["block1_mha", "block2_mha"]
    norms = [model.get_layer(n) for n in ("block1_ln1", "block1_ln2", "block2_ln1", "block2_ln2", "final_ln")]
    assert all(ln.epsilon == 1e-6 for ln in norms)
    # pre-LN: each block's attention reads the LayerNorm of the residual stream, not the stream itself
    assert attention[0]._inbound_nodes[0].parent_nodes[0].operation.name == "block1_ln1"


def test_transformer_sees_order_and_the_bag_baseline_does_not():
    keras.utils.set_random_seed(0)
    data = images((24,), 2, vocab_size=16, max_length=24)
    x = _tokens()
    lengths = (x != 0).sum(axis=1)
    shuffled = x.copy()
    for row, n in zip(shuffled, lengths):
        row[:n] = row[:n][::-1]  # reverse the real tokens: same multiset, different order
    model = build("transformer", data, dim=16, num_heads=2, mlp_dim=32)
    assert np.abs(np.asarray(model(x)) - np.asarray(model(shuffled))).max() > 1e-4
    bag = build("transformer", data, dim=16, num_layers=0, positions=False, pooling="mean", num_heads=2)
    np.testing.assert_allclose(np.asarray(bag(x)), np.asarray(bag(shuffled)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean", "attention"])
def test_transformer_checkpoint_loads_in_a_process_without_nnrun(tmp_path, pooling):
    """Stock Keras layers only: plain keras.saving.load_model, safe_mode, no nnrun import."""
    import subprocess
    import sys

    data = images((24,), 2, vocab_size=16, max_length=24)
    model = build("transformer", data, dim=16, num_heads=2, mlp_dim=32, num_layers=1, pooling=pooling)
    model.save(tmp_path / "m.keras")
    x = _tokens()
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, keras\n"
            f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}, safe_mode=True)\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(m(np.load({str(tmp_path / 'x.npy')!r}))))\n"
            "assert not any(name.startswith('nnrun') for name in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(model(x)), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- siamese


def test_siamese_shares_one_encoder_and_normalises_embeddings():
    keras.utils.set_random_seed(0)
    data = DataBundle({}, (2, 16, 16, 3), 2, task="pairs")
    model = build("siamese", data, embedding_dim=8,
                  encoder={"name": "resnet", "params": {"stages": [8], "blocks_per_stage": 1}})
    encoder = model.get_layer("shared_encoder").layer
    assert model.count_params() == encoder.count_params()  # one set of weights for both images
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 16, 16, 3), "float32"), rng.random((3, 16, 16, 3), "float32")
    ab = np.asarray(model(np.stack([a, b], 1)))
    ba = np.asarray(model(np.stack([b, a], 1)))
    assert ab.shape == (3, 2, 8)
    np.testing.assert_allclose(ab[:, ::-1], ba, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ab, axis=-1), 1.0, rtol=1e-5)
    direct = np.asarray(encoder(a))
    np.testing.assert_allclose(ab[:, 0], direct / np.linalg.norm(direct, axis=-1, keepdims=True), rtol=1e-4, atol=1e-5)


def test_a_model_built_without_the_preprocessing_layers_gets_them_in_front():
    """A plugin's model that knows nothing of DataBundle.preprocess still sees preprocessed inputs."""
    from nnrun.components.models.inputs import has_preprocessing, with_preprocessing

    inputs = keras.Input((4, 4, 1))
    plain = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    data = DataBundle({}, (4, 4, 1), 2, preprocess={"rescale": 0.5, "mean": [1.0], "std": [2.0]})
    wrapped = with_preprocessing(plain, data)
    assert has_preprocessing(wrapped) and not has_preprocessing(plain)
    x = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(wrapped(x)), np.asarray(plain((x * 0.5 - 1.0) / 2.0)), rtol=1e-5)
    assert with_preprocessing(wrapped, data) is wrapped  # never twice

"""Explainers on token sequences: attributions over the token embedding, per token (issue 16 item 4),
and `nnrun explain` keeping TensorFlow's C++ start-up logs off stderr on streamed data (item 9).

The unit tests use hand-made functional models (closed forms) and the registry's `transformer`
built from tiny params (so they follow the model's implementation, whatever its layers are);
the CLI tests train tiny runs in a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnrun.errors import UsageError
from tests.conftest import run_cli

VOCAB, DIM, CLASSES = 9, 6, 3


@pytest.fixture(scope="module")
def keras():
    from nnrun.engine.runtime import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(5)
    return keras


def token_rows(n=4, length=7, seed=0) -> np.ndarray:
    """Ids 1..VOCAB-1 followed by padding (id 0); every row has 2..length real tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (n, length)).astype(np.int32)
    lengths = np.linspace(2, length, n).astype(int)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens


def bag_model(keras, mask_zero=True):
    """int tokens -> Embedding -> masked mean over tokens -> Dense: the logit is linear in the
    embeddings, so IG of the logit is exact: IG_t = (e_t - e_0) . w_c / (real tokens)."""
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, DIM, mask_zero=mask_zero, name="emb")(tokens)
    x = keras.layers.GlobalAveragePooling1D(name="mean")(x)
    return keras.Model(tokens, keras.layers.Dense(CLASSES, name="logits")(x))


def explainer(name, model, **p):
    from nnrun import registry

    component = registry.get("explainer", name)
    return component.builder(component.params.model_validate(p), model)


def closed_form_ig(model, tokens, targets):
    table = model.get_layer("emb").embeddings.numpy()
    w = model.get_layer("logits").kernel.numpy()[:, targets].T  # (N, D)
    real = tokens != 0
    delta = table[tokens] - table[0]  # (N, T, D)
    return np.where(real, np.einsum("ntd,nd->nt", delta, w) / real.sum(1, keepdims=True), 0.0)


# -- the hand-made model: closed forms -------------------------------------------------------

def test_ig_over_the_embedding_has_the_closed_form_and_keeps_the_padding_mask(keras):
    model = bag_model(keras)
    x, targets = token_rows(), np.array([0, 2, 1, 2], np.int32)
    result = explainer("integrated-gradients", model, steps=8, score="logit").explain(x, targets)
    # The divisor is the number of real tokens: the mean pooling still got the mask of the real ids.
    np.testing.assert_allclose(result.raw, closed_form_ig(model, x, targets), atol=1e-6)
    assert result.raw.shape == x.shape and (result.raw[x == 0] == 0).all()
    assert (result.real == (x != 0)).all()
    assert result.per_image["completeness_error"].max() < 1e-5
    assert np.abs(result.heatmap).max() == pytest.approx(1.0) and (result.heatmap[x == 0] == 0).all()


def test_ig_completeness_for_the_probability_and_batch_chunks(keras):
    model = bag_model(keras)
    table = model.get_layer("emb")
    table.embeddings.assign(table.embeddings.numpy() * 8)  # a clearly nonlinear softmax along the path
    x, targets = token_rows(5, seed=1), np.array([0, 1, 2, 0, 1], np.int32)
    ig = explainer("integrated-gradients", model, steps=32)
    result = ig.explain(x, targets, batch_size=1000)
    gap = result.per_image["score"] - result.per_image["baseline_score"]
    assert np.abs(gap).min() > 1e-3
    np.testing.assert_allclose(result.raw.sum(1), gap, atol=1e-3 * np.abs(gap).max())
    assert result.per_image["completeness_error"].max() < 1e-3
    np.testing.assert_allclose(result.per_image["score"],  # F(x) with the injected embedding is the model's
                               np.take_along_axis(keras.ops.softmax(model(x)).numpy(), targets[:, None], 1)[:, 0],
                               rtol=1e-5)
    np.testing.assert_allclose(ig.explain(x, targets, batch_size=7).raw, result.raw, rtol=1e-4, atol=1e-7)


def test_gradient_is_gradient_times_input_per_token(keras):
    model = bag_model(keras)
    x, targets = token_rows(seed=2), np.array([1, 1, 0, 2], np.int32)
    raw = explainer("gradient", model).explain(x, targets).raw  # score: logit
    table = model.get_layer("emb").embeddings.numpy()
    w = model.get_layer("logits").kernel.numpy()[:, targets].T
    real = x != 0
    want = np.where(real, np.einsum("ntd,nd->nt", table[x], w) / real.sum(1, keepdims=True), 0)
    np.testing.assert_allclose(raw, want, atol=1e-6)


def test_smoothgrad_adds_noise_in_embedding_space_at_real_tokens_only(keras):
    model = bag_model(keras)
    x, targets = token_rows(seed=3), np.array([0, 1, 2, 0], np.int32)
    plain = explainer("gradient", model).explain(x, targets).raw
    np.testing.assert_allclose(explainer("smoothgrad", model, samples=2, noise=0.0).explain(x, targets).raw,
                               plain, atol=1e-6)
    smooth = explainer("smoothgrad", model, samples=6, noise=0.3)
    raw = smooth.explain(x, targets).raw
    assert not np.allclose(raw, plain) and (raw[x == 0] == 0).all()
    assert smooth.info["input"] == "tokens" and "embedding" in smooth.info["noise_space"]
    ig = explainer("smoothgrad", model, base="integrated-gradients", samples=2, noise=0.1,
                   base_params={"steps": 4}).explain(x, targets)
    assert ig.raw.shape == x.shape and np.isfinite(ig.raw).all()


# -- finding the token embedding ------------------------------------------------------------

def test_the_embedding_is_found_in_a_nested_model_and_inside_a_custom_layer(keras):
    from nnrun.explain.tokens import find_token_embedding

    flat = bag_model(keras)
    inner_in = keras.Input((None,), dtype="int32")
    inner = keras.Model(inner_in, flat.get_layer("mean")(flat.get_layer("emb")(inner_in)), name="encoder")
    outer_in = keras.Input((None,), dtype="int32")
    nested = keras.Model(outer_in, flat.get_layer("logits")(inner(outer_in)))
    assert find_token_embedding(nested)[0] == "encoder/emb"
    x, targets = token_rows(seed=4), np.array([2, 0, 1, 1], np.int32)
    nested_ig = explainer("integrated-gradients", nested, steps=8, score="logit").explain(x, targets).raw
    np.testing.assert_allclose(nested_ig, closed_form_ig(flat, x, targets), atol=1e-6)

    class TokenAndPosition(keras.layers.Layer):  # as a custom layer holding two Embeddings
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.positions = keras.layers.Embedding(16, DIM, name="positions")
            self.tokens = keras.layers.Embedding(VOCAB, DIM, name="tokens")

        def call(self, ids):
            return self.tokens(ids) + self.positions(keras.ops.arange(keras.ops.shape(ids)[1]))[None]

    ids = keras.Input((None,), dtype="int32")
    h = TokenAndPosition(name="embedding")(ids)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(DIM, activation="tanh")(h))
    custom = keras.Model(ids, keras.layers.Dense(CLASSES)(h))
    assert find_token_embedding(custom)[0] == "embedding/tokens"
    result = explainer("integrated-gradients", custom, steps=16).explain(x, targets)
    assert result.per_image["completeness_error"].max() < 1e-3 and (result.raw[x == 0] == 0).all()


def test_integer_inputs_without_an_embedding_are_a_usage_error(keras):
    ids = keras.Input((5,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(2)(keras.ops.cast(ids, "float32")))
    with pytest.raises(UsageError, match="no keras.layers.Embedding consumes them"):
        explainer("gradient", model).explain(token_rows(2, 5), np.zeros(2, np.int32))
    with pytest.raises(UsageError, match="--baseline blur applies to images"):
        explainer("integrated-gradients", bag_model(keras), baseline="blur").explain(token_rows(2),
                                                                                     np.zeros(2, np.int32))


# -- the project's transformer ---------------------------------------------------------------

def tiny_transformer(pooling: str):
    from nnrun import registry
    from nnrun.components.data.base import DataBundle

    component = registry.get("model", "transformer")
    params = component.params.model_validate({"dim": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32,
                                              "attention_units": 8, "pooling": pooling, "dropout": 0.0})
    return component.builder(params, DataBundle({}, (10,), CLASSES, meta={"vocab_size": VOCAB, "max_length": 10}))


@pytest.mark.parametrize("pooling", ["attention", "cls"])
def test_transformer_ig_completeness_and_padding_invariance(keras, pooling):
    model = tiny_transformer(pooling)
    x = token_rows(3, 7, seed=6)
    targets = np.array([0, 1, 2], np.int32)
    ig = explainer("integrated-gradients", model, steps=32)
    result = ig.explain(x, targets, batch_size=40)
    assert ig.info["embedding_layer"] and "padding" in ig.info["baseline"]
    assert result.per_image["completeness_abs_error"].max() < 1e-3, result.per_image
    assert (result.raw[x == 0] == 0).all() and np.isfinite(result.raw).all()
    # Padding appended at the end changes neither the model nor (so) the real tokens' attributions.
    longer = np.pad(x, ((0, 0), (0, 3)))
    np.testing.assert_allclose(ig.explain(longer, targets, batch_size=40).raw[:, :7], result.raw, atol=2e-5)
    for method in ("gradient", "smoothgrad"):
        raw = explainer(method, model, **({"samples": 2} if method == "smoothgrad" else {})).explain(x, targets).raw
        assert raw.shape == x.shape and (raw[x == 0] == 0).all() and np.isfinite(raw).all()


def test_randomised_transformer_is_explained_too(keras):
    from nnrun.explain.checks import randomised_model

    model = tiny_transformer("attention")
    x = token_rows(2, 6, seed=7)
    raw = explainer("gradient", randomised_model(model)).explain(x, np.array([0, 1], np.int32)).raw
    assert raw.shape == x.shape and np.isfinite(raw).all()


def test_token_heatmaps_are_signed_and_zero_at_padding():
    from nnrun.explain.tokens import token_heatmap

    raw = np.array([[0.5, -1.0, 0.25, 7.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    real = np.array([[True, True, True, False], [True, True, False, False]])
    np.testing.assert_allclose(token_heatmap(raw, real), [[0.5, -1.0, 0.25, 0.0], [0, 0, 0, 0]])


# -- through the CLI -------------------------------------------------------------------------

TINY_SEQUENCES = """\
name: tiny_seq
seed: 0
data:
  dataset: sequences
  params: {num_train: 256, num_val: 64, vocab_size: 12, min_length: 4, max_length: 10}
  batch_size: 32
model:
  name: transformer
  params: {dim: 16, num_layers: 1, num_heads: 2, mlp_dim: 32, attention_units: 8, dropout: 0.0}
optimizer: {name: adam, learning_rate: 0.003}
train: {epochs: 1}
runtime: {runs_root: RUNS, deterministic: true}
"""


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("explain_seq")
    config = tmp / "tiny_seq.yaml"
    config.write_text(TINY_SEQUENCES.replace("RUNS", str(tmp / "runs")))
    res = run_cli("train", str(config), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def val_tokens(run: Path, n: int) -> np.ndarray:
    from nnrun.engine.build import build_data
    from nnrun.rundir import RunDir

    return build_data(RunDir.open(run).read_config()).split("val").x[:n]


@pytest.mark.slow
def test_cli_integrated_gradients_per_token(sequence_run, tmp_path):
    out = tmp_path / "ig"
    res = run_cli("explain", str(sequence_run), "--method", "integrated-gradients", "--num-images", "3",
                  "--steps", "32", "--output", str(out), "--sanity-check")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"] == "tokens" and manifest["params"]["baseline"] == "padding"
    assert "padding" in manifest["explainer"]["baseline"] and manifest["explainer"]["embedding_layer"]
    assert manifest["summary"]["completeness_abs_error_max"] < 1e-3
    assert -1 <= manifest["summary"]["sanity_rank_correlation"] <= 1
    tokens = val_tokens(sequence_run, 3)
    for item, row in zip(manifest["images"], tokens):
        real = row[row != 0]
        values = np.load(out / item["heatmap"])
        assert values.shape == (len(real),) == (item["num_tokens"],)  # padding excluded
        assert [t["id"] for t in item["tokens"]] == real.tolist()
        np.testing.assert_allclose([t["attribution"] for t in item["tokens"]], values, rtol=1e-6)
        gap = item["score"] - item["baseline_score"]
        assert abs(values.sum() - gap) == pytest.approx(item["completeness_abs_error"], abs=1e-5)
        assert (out / item["overlay"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
def test_cli_gradient_methods_run_on_sequences(sequence_run, tmp_path, method):
    extra = ["--samples", "2"] if method == "smoothgrad" else []
    res = run_cli("explain", str(sequence_run), "--method", method, "--num-images", "2", *extra,
                  "--output", str(tmp_path / method))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / method / "manifest.json").read_text())
    assert all(len(i["tokens"]) == i["num_tokens"] > 0 for i in manifest["images"])
    assert "per token" in manifest["raw"]


def one_line_error(res, text: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_cli_unsupported_combinations_on_sequences_exit_2(sequence_run):
    for args in (["--method", "gradcam"], ["--method", "gradcam++"], ["--method", "smoothgrad", "--base", "gradcam"]):
        res = run_cli("explain", str(sequence_run), *args, "--num-images", "2")
        one_line_error(res, "needs convolutional (height, width) feature maps; this run's inputs are token sequences")
    one_line_error(run_cli("explain", str(sequence_run), "--method", "integrated-gradients", "--baseline", "blur"),
                   "--baseline applies to images")
    assert not (sequence_run / "explain").exists()
    probe = ("import sys\nfrom nnrun.errors import UsageError\nfrom nnrun.explain.command import explain\n"
             f"try:\n    explain({str(sequence_run)!r}, 'gradcam')\nexcept UsageError:\n    pass\n"
             "print('tensorflow' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", (res.stdout, res.stderr)  # refused before TensorFlow loads


# -- item 9: no TensorFlow C++ logs on a streamed (cache: file) run ---------------------------

STREAMED = """\
name: streamed
seed: 0
data:
  dataset: image_folder
  params: {{path: {root}, image_size: 8, cache: file, cache_dir: {cache}}}
  batch_size: 8
model: {{name: resnet, params: {{stages: [4], blocks_per_stage: 1}}}}
optimizer: {{name: adam, learning_rate: 0.01}}
train: {{epochs: 1}}
runtime: {{runs_root: {runs}, deterministic: true}}
"""

TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |cuda|absl::|oneDNN|cpu_feature_guard", re.IGNORECASE | re.MULTILINE)


@pytest.mark.slow
def test_cli_explain_on_a_cache_file_run_prints_no_tensorflow_logs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, count in (("train", 6), ("val", 2)):
        for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            folder = tmp_path / "imgs" / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (10, 10, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    config = tmp_path / "streamed.yaml"
    config.write_text(STREAMED.format(root=tmp_path / "imgs", cache=tmp_path / "cache", runs=tmp_path / "runs"))
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    run = res.stdout.strip().splitlines()[-1]
    env = {k: v for k, v in os.environ.items() if k not in ("NNRUN_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    res = subprocess.run([sys.executable, "-m", "nnrun", "explain", run, "--num-images", "2",
                          "--output", str(tmp_path / "cam")], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert not TF_LOG_LINE.search(res.stderr), res.stderr

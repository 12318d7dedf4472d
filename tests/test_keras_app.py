"""`keras_app`: keras.applications backbones. Every listed architecture builds flat on the
built-in data, trains a step, passes Grad-CAM's automatic layer choice and reloads with
safe_mode; the in-model preprocessing equals the architecture's own preprocess_input; ImageNet
weights come from the Keras cache only (never the network), and a missing file is a one-line
config error before any run directory exists."""

from __future__ import annotations

import importlib
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnrun.components.data.base import DataBundle
from nnrun.components.models import keras_app
from nnrun.errors import ConfigError
from tests.conftest import ROOT, run_cli

keras = pytest.importorskip("keras")

# One eager training step, Grad-CAM and a save/load round trip take longer than ~10 s here.
SLOW = {"ResNet50", "ResNet50V2", "ConvNeXtTiny", "DenseNet121", "Xception", "InceptionV3", "EfficientNetV2B0"}
ALL = [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in keras_app.ARCHITECTURES]

CONFIG = """\
name: kapp
seed: 0
data:
  dataset: shapes
  params: {{num_train: 16, num_val: 8, image_size: {size}}}
  batch_size: 16
model:
  name: keras_app
  params: {{architecture: {arch}{extra}}}
optimizer: {{name: adam, learning_rate: 0.001}}
train: {{epochs: 1}}
runtime: {{runs_root: {runs}, deterministic: true}}
"""


def config_file(tmp_path: Path, arch: str, extra: str = "", size: int | None = None) -> Path:
    size = size or max(32, keras_app.ARCHITECTURES[arch][1])
    path = tmp_path / "kapp.yaml"
    path.write_text(CONFIG.format(arch=arch, extra=extra, size=size, runs=tmp_path / "runs"))
    return path


def build_app(data: DataBundle, **params):
    return keras_app.build(keras_app.KerasAppParams(**params), data)


def images(shape=(32, 32, 3), classes=3, preprocess=None) -> DataBundle:
    return DataBundle({}, shape, classes, preprocess=preprocess)


UINT8 = {"rescale": 1 / 255, "mean": None, "std": None}  # what image_folder / npz / tfds give


def prefix_output(model):
    """The tensor the backbone's first layer reads: after `preprocess_input`, or `input_rescale`
    when the architecture's preprocess_input is the identity."""
    names = [layer.name for layer in model.layers]
    return model.get_layer(keras_app.PREPROCESS if keras_app.PREPROCESS in names else keras_app.RESCALE).output


# ------------------------------------------------------------------ every architecture


def test_architecture_list_matches_the_literal_and_keras():
    from typing import get_args

    assert get_args(keras_app.Architecture) == tuple(keras_app.ARCHITECTURES)
    for arch, (module, minimum) in keras_app.ARCHITECTURES.items():
        assert callable(getattr(keras.applications, arch))
        assert callable(importlib.import_module(f"keras.applications.{module}").preprocess_input)
        assert minimum >= 32


@pytest.mark.parametrize("arch", ALL)
def test_every_architecture_builds_flat_trains_explains_and_reloads(tmp_path, arch):
    from nnrun.components.techniques.finetune import backbone_layers
    from nnrun.config import load_config
    from nnrun.engine import build
    from nnrun.explain.gradcam import CAM
    from nnrun.explain.target_layer import find_layer

    keras.backend.clear_session()
    cfg = load_config(config_file(tmp_path, arch))
    data = build.build_data(cfg)
    model = build.build_model(cfg, data)  # the engine's path (it must not wrap the model again)

    # Flat, unique names, our layers around the backbone, float32 logits.
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    # The backbone is not a nested model (ConvNeXt's own stem and downsampling blocks are small Sequentials).
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert all(isinstance(layer, keras.Sequential) and len(layer.layers) <= 2 for layer in nested)
    assert len(model.layers) - len(nested) > 20
    assert names[:2] == ["image", "input_rescale"] and names[-2:] == ["pool", "logits"]
    assert model.get_layer("logits").units == data.num_classes and model.get_layer("logits").dtype == "float32"
    assert len(backbone_layers(model)) > 10  # finetune: everything but the head is backbone

    # In-model preprocessing = the architecture's preprocess_input on 0..255 pixels (shapes: 0..1 floats).
    x = data.split("train").x
    module = importlib.import_module(f"keras.applications.{keras_app.ARCHITECTURES[arch][0]}")
    ours = keras.Model(model.inputs[0], prefix_output(model))(x[:4]).numpy()
    np.testing.assert_allclose(ours, module.preprocess_input(255.0 * x[:4]), rtol=0, atol=1e-5)

    # Grad-CAM's automatic choice is the backbone's last feature map (what our pooling reads).
    _, chain = find_layer(model, None)
    assert chain[-1] is model.get_layer("pool").input._keras_history.operation
    maps = CAM(model, None).attribute(x[:2], np.array([0, 1]), 2)
    assert maps.shape == (2, *x.shape[1:3]) and np.isfinite(maps).all()

    # One training step through the engine's loss, optimizer and metrics.
    build.compile_model(model, cfg, data)
    model.run_eagerly = True  # one step: tracing a large graph would cost more than the step
    y = keras.utils.to_categorical(data.split("train").y, data.num_classes)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))

    # The checkpoint format: stock layers and ops only, safe_mode loads it.
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", list(keras_app.ARCHITECTURES))
@pytest.mark.parametrize("channels", [3, 1])
def test_preprocessing_equals_the_architectures_preprocess_input(arch, channels):
    """uint8-style inputs (rescale 1/255): input_rescale is x 1, then preprocess_input."""
    inputs = keras.Input((None, None, channels))
    model = keras.Model(inputs, keras_app.preprocessing(inputs, arch, 255 * UINT8["rescale"]))
    pixels = np.random.default_rng(1).integers(0, 256, (3, 5, 7, channels)).astype(np.float32)
    module = importlib.import_module(f"keras.applications.{keras_app.ARCHITECTURES[arch][0]}")
    expected = np.asarray(module.preprocess_input(np.repeat(pixels, 3 // channels, axis=-1)))
    np.testing.assert_allclose(model(pixels).numpy(), expected, rtol=0, atol=1e-5)
    names = [layer.name for layer in model.layers]
    assert (keras_app.TO_RGB in names) == (channels == 1)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_preprocess_modes_are_recognised():
    """caffe: BGR and mean subtraction; tf: [-1, 1]; torch: ImageNet mean/std; identity: none."""
    from keras.applications import densenet, efficientnet, mobilenet_v2, resnet50

    flip, scale, offset = keras_app.affine_preprocess(resnet50.preprocess_input)
    assert flip and scale == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(offset, [-103.939, -116.779, -123.68], rtol=1e-6)
    flip, scale, offset = keras_app.affine_preprocess(mobilenet_v2.preprocess_input)
    assert not flip and scale == pytest.approx([1 / 127.5] * 3, rel=1e-7) and offset == [-1.0] * 3
    flip, scale, offset = keras_app.affine_preprocess(densenet.preprocess_input)
    std, mean = np.array([0.229, 0.224, 0.225]), np.array([0.485, 0.456, 0.406])
    assert not flip
    np.testing.assert_allclose(scale, 1 / (255 * std), rtol=1e-5)
    np.testing.assert_allclose(offset, -mean / std, rtol=1e-5)
    assert keras_app.affine_preprocess(efficientnet.preprocess_input) == (False, [1.0] * 3, [0.0] * 3)
    with pytest.raises(ValueError, match="not"):
        keras_app.affine_preprocess(lambda x: x**2)


def test_grayscale_uint8_images_and_the_engine_does_not_wrap(tmp_path):
    from nnrun.components.models.inputs import with_preprocessing

    data = images((32, 32, 1), 2, preprocess=UINT8)
    model = build_app(data, architecture="MobileNetV3Small", dropout=0.2)
    assert with_preprocessing(model, data) is model
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "to_rgb", "input_rescale"] and "head_dropout" in names
    assert model.get_layer("input_rescale").scale == pytest.approx(1.0)  # uint8 0..255 stay 0..255
    assert model(np.zeros((2, 40, 48, 1), np.float32)).shape == (2, 2)  # any size above the minimum


def test_pooling_dropout_and_bn_momentum():
    data = images()
    model = build_app(data, architecture="MobileNetV2", pooling="max", dropout=0.3, bn_momentum=0.8)
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert model.get_layer("head_dropout").rate == 0.3
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.8}
    keeps = build_app(data, architecture="MobileNetV2", bn_momentum=None)
    assert {layer.momentum for layer in keeps.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.999}


def test_mixed_precision_keeps_preprocessing_and_logits_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_app(images((32, 32, 1), 2, preprocess={"rescale": 1 / 65535, "mean": None, "std": None}),
                          architecture="MobileNet")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for name in ("to_rgb", "input_rescale", "preprocess_input", "logits"):
        assert model.get_layer(name).compute_dtype == "float32", name
    assert model.get_layer("conv1").compute_dtype == "float16"


# ------------------------------------------------------------------ config errors


def test_too_small_images_are_a_config_error():
    with pytest.raises(ConfigError, match=r"^model.params.architecture: Xception needs images of at least 71x71 "
                                          r"pixels; the data set gives 64x64"):
        build_app(images((64, 64, 3)), architecture="Xception")
    with pytest.raises(ConfigError, match="InceptionV3 needs images of at least 75x75"):
        build_app(images((74, 80, 3)), architecture="InceptionV3")


def test_data_normalisation_is_refused():
    data = images(preprocess={"rescale": 1 / 255, "mean": [0.5] * 3, "std": [0.2] * 3})
    with pytest.raises(ConfigError, match=r"^data.params.normalize: keras_app applies ResNet50's own preprocessing "
                                          r"\(preprocess_input\); remove data.params.normalize$"):
        build_app(data, architecture="ResNet50")


@pytest.mark.parametrize("shape", [(24,), (32, 32, 4)])
def test_inputs_that_are_not_rgb_or_gray_images_are_a_config_error(shape):
    with pytest.raises(ConfigError, match="keras_app needs images with 1 or 3 channels"):
        build_app(images(shape), architecture="MobileNet")


def test_architecture_typo_gets_did_you_mean_and_validate_stays_tensorflow_free(tmp_path):
    res = run_cli("validate", str(config_file(tmp_path, "resnet50", size=32)), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == ("config error: model.params.architecture: unknown architecture 'resnet50'; "
                                  "did you mean 'ResNet50'?")
    code = ("import sys; from nnrun.config import load_config; from nnrun import registry; "
            f"load_config({str(config_file(tmp_path, 'ConvNeXtTiny', ', weights: imagenet'))!r}); "
            "registry.components('model'); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ------------------------------------------------------------------ ImageNet weights, offline

EXPECTED_FILE = {"MobileNet": "mobilenet_1_0_224_tf_no_top.h5", "EfficientNetB0": "efficientnetb0_notop.h5"}


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty Keras home: Keras reads $KERAS_HOME once, at import, so patch its value too."""
    from keras.src.backend import config

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    return home


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("arch", list(EXPECTED_FILE))
def test_imagenet_weights_come_from_the_keras_cache_and_never_the_network(keras_home, no_network, arch):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from nnrun.components.models.heads import HEAD_LAYERS

    data = images()
    with pytest.raises(ConfigError) as missing:
        build_app(data, architecture=arch, weights="imagenet")
    message, directory = str(missing.value), keras_home / "models"
    assert "\n" not in message and message.startswith(f"model.params.weights: {arch} ImageNet weights need the file "
                                                      f"{EXPECTED_FILE[arch]} in {directory}/")
    assert "https://storage.googleapis.com/" in message
    assert not (directory / EXPECTED_FILE[arch]).exists()

    # A no-top weight file in Keras' legacy .h5 format (as the official ones are), where Keras expects it.
    donor = getattr(keras.applications, arch)(include_top=False, weights=None, input_shape=(None, None, 3))
    directory.mkdir(exist_ok=True)
    with h5py.File(directory / EXPECTED_FILE[arch], "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, donor)
    saved = [w for layer in donor.layers for w in layer.get_weights()]

    model = build_app(data, architecture=arch, weights="imagenet")
    loaded = [w for layer in model.layers if layer.name not in HEAD_LAYERS for w in layer.get_weights()]
    assert len(loaded) == len(saved)
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)
    fresh = build_app(data, architecture=arch, weights="none")
    assert not all(np.array_equal(a.numpy(), b) for a, b in zip(fresh.weights, loaded))
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 3)


def test_missing_imagenet_weights_exit_2_with_one_line_and_no_run_directory(tmp_path):
    home = tmp_path / "keras_home"
    home.mkdir()
    res = run_cli("train", str(config_file(tmp_path, "MobileNetV3Small", ", weights: imagenet")), cwd=tmp_path,
                  env={"KERAS_HOME": str(home)})
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert re.fullmatch(r"config error: model.params.weights: MobileNetV3Small ImageNet weights need the file "
                        rf"weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5 in {re.escape(str(home))}/models/ .*"
                        r"copy it there from https://\S+", line), line
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ the example config, end to end


@pytest.mark.slow
def test_example_config_trains_and_explains_through_the_cli(tmp_path):
    config = ROOT / "configs" / "keras_app_shapes.yaml"
    res = run_cli("train", str(config), "--set", f"runtime.runs_root={tmp_path / 'runs'}",
                  "--set", "data.params.num_train=128", "--set", "data.params.num_val=64",
                  "--set", "train.epochs=1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    run = Path(res.stdout.strip().splitlines()[-1])
    assert (run / "checkpoints" / "best.keras").is_file()
    res = run_cli("explain", str(run), "--num-images", "4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "manifest.json").read_text())
    assert len(manifest["images"]) == 4 and manifest["explainer"]["layer"].startswith("activation")  # the last hard-swish

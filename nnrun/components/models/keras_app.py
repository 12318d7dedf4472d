"""`keras_app`: a `keras.applications` backbone (ResNet50, MobileNetV3, EfficientNet, ...) with a
new classifier head sized to the data set's classes.

The graph is flat: the application is built with `input_tensor=` on our input layers and
`include_top=False, pooling=None`, and our pooling and head (models/heads.py: float32 `logits`,
optional `head_dropout`) follow its last feature map. So Grad-CAM's automatic layer choice finds
the backbone's last conv block, name-based weight loading (`model.init_from`) sees every
backbone layer, and `finetune` tells head from backbone by the head's layer names. (ConvNeXt
itself builds its stem and downsampling blocks as small nested Sequentials; those stay.)
`input_rescale` (models/inputs.py's name) also tells engine/build.py that the model handles the
data set's rescaling itself, so it does not wrap the model in another preprocessing layer.

Inputs and preprocessing live inside the model, so the run's data pipeline is the same as for
any other model: the input takes the split's raw images (uint8 0..255 from image_folder, tfds,
npz; float 0..1 from `shapes`), grayscale images are repeated to 3 channels (`to_rgb`),
`input_rescale` maps them to the 0..255 range the applications expect (factor 255 x the data
set's `rescale`), and `preprocess_input` applies the architecture's own
`keras.applications.<module>.preprocess_input`. Those are all per-pixel affine maps (caffe:
RGB->BGR and ImageNet mean subtraction; tf: x/127.5 - 1; torch: x/255, ImageNet mean and std;
none for EfficientNet, ConvNeXt and MobileNetV3, which carry their own Rescaling /
Normalization layers): we probe the function numerically (on 0 and 255 per channel), and
build the map as a stock, weight-free `Rescaling(scale=[...], offset=[...])`, preceded by
`keras.ops.flip` on the channel axis when the map swaps RGB to BGR. No Lambda layers, no custom
classes: checkpoints load with `keras.saving.load_model(..., safe_mode=True)` without nnrun.
(Weight-free on purpose: the applications load their ImageNet weights into the whole graph we
hand them, matching layers that have weights in order, so an extra layer with weights, such
as a frozen Dense(3), would break `weights: imagenet`.) The data set's own normalisation
(`data.params.normalize`) would be applied on top of this and is refused.

`weights: imagenet` without a network. Keras downloads the weight file once with
`keras.utils.get_file` into its cache directory (`$KERAS_HOME/models/`, default
`~/.keras/models/`) and checks the file's hash, downloading again on a mismatch. These
machines reach no network, so while the application is built we replace the `get_file` it
calls: the file already in that directory is used as is (no download, no hash check: copy the
official file there, e.g. from a machine that has run the same Keras version), and a missing
file is a one-line config error naming the file, the directory and the download address,
raised while the model is built, before any run directory exists.

Minimum image sizes: most architectures accept 32 px and more (the size Keras enforces for
them); Xception needs 71 px and InceptionV3 75 px. The model takes any size at or above the
minimum (its input is (None, None, C)), so progressive resizing works above it.

`bn_momentum` (default 0.9, as the `resnet` model) replaces the BatchNormalization momentum of
the applications (0.99; MobileNetV2/V3 0.999): with 0.999 the moving statistics of a short run
from scratch stay near their initial values and validation accuracy stays at chance.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Literal

from pydantic import Field, field_validator

from nnrun.errors import ConfigError
from nnrun.registry import Params, register, unknown_message

# architecture -> (keras.applications module holding its preprocess_input, minimum image side).
# Kept as plain data: `nnrun validate` and `nnrun components` must not import TensorFlow.
ARCHITECTURES: dict[str, tuple[str, int]] = {
    "ResNet50": ("resnet50", 32),
    "ResNet50V2": ("resnet_v2", 32),
    "MobileNet": ("mobilenet", 32),
    "MobileNetV2": ("mobilenet_v2", 32),
    "MobileNetV3Small": ("mobilenet_v3", 32),
    "MobileNetV3Large": ("mobilenet_v3", 32),
    "EfficientNetB0": ("efficientnet", 32),
    "EfficientNetV2B0": ("efficientnet_v2", 32),
    "ConvNeXtTiny": ("convnext", 32),
    "DenseNet121": ("densenet", 32),
    "VGG16": ("vgg16", 32),
    "Xception": ("xception", 71),
    "InceptionV3": ("inception_v3", 75),
}
Architecture = Literal[tuple(ARCHITECTURES)]  # the table's names, in its order

# Layer names this module adds around the backbone (models/inputs.py's RESCALE: its presence
# tells engine/build.py that the model handles the data set's rescaling itself).
INPUT, TO_RGB, RESCALE, PREPROCESS, POOL = "image", "to_rgb", "input_rescale", "preprocess_input", "pool"


class KerasAppParams(Params):
    architecture: Architecture = Field(
        ..., description="keras.applications constructor; images of at least 32 px (Xception 71, InceptionV3 75)"
    )
    weights: Literal["none", "imagenet"] = Field(
        "none", description="none: random init; imagenet: Keras' file from its cache dir ($KERAS_HOME/models, "
        "~/.keras/models), never downloaded"
    )
    pooling: Literal["avg", "max"] = Field("avg", description="global pooling of the last feature map")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier (layer head_dropout)")
    bn_momentum: float | None = Field(
        0.9, gt=0, lt=1, description="momentum of every BatchNormalization's moving statistics (0.9 = PyTorch's "
        "0.1); null keeps the architecture's (0.99, MobileNetV2/V3 0.999: on short runs they lag and "
        "validation fails)"
    )

    @field_validator("architecture", mode="before")
    @classmethod
    def _known(cls, value):
        if value not in ARCHITECTURES:
            raise ValueError(unknown_message("architecture", value, list(ARCHITECTURES)))
        return value


def affine_preprocess(preprocess_input) -> tuple[bool, list[float], list[float]]:
    """`preprocess_input` (channels last, 3 channels) as y = scale * x[flip] + offset: (flip
    RGB->BGR first, per-channel scale, per-channel offset), probed numerically on 0 and 255 per
    channel and checked on random pixels. ValueError if it is not such a map."""
    import numpy as np
    from keras import ops

    def f(x):
        return np.asarray(ops.convert_to_numpy(preprocess_input(x.copy())), dtype=np.float64).reshape(-1, 3)

    offset = f(np.zeros((1, 1, 1, 3), np.float32))[0]
    # column c of A: the response to channel c alone
    matrix = np.stack([(f(255 * np.eye(3, dtype=np.float32)[c].reshape(1, 1, 1, 3))[0] - offset) / 255
                       for c in range(3)], axis=1)
    flip = not np.allclose(matrix - np.diag(np.diag(matrix)), 0)
    if flip:  # y = A x = (A J)(J x), J the channel reversal
        matrix = matrix[:, ::-1]
    if not np.allclose(matrix - np.diag(np.diag(matrix)), 0):
        raise ValueError(f"preprocess_input is not a per-channel affine map (matrix {matrix.tolist()})")
    scale = np.diag(matrix)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    mapped = (pixels[..., ::-1] if flip else pixels).reshape(-1, 3) * scale + offset
    if not np.allclose(mapped, f(pixels), rtol=1e-5, atol=1e-4):
        raise ValueError("preprocess_input is not affine")
    # The layer computes in float32: round there (caffe's scale 1 + 3e-8 from the probe becomes 1).
    return flip, [float(np.float32(v)) for v in scale], [float(np.float32(v)) for v in offset]


def keras_cache_dir(cache_subdir: str = "models", cache_dir: str | None = None) -> str:
    """The directory `keras.utils.get_file` stores `cache_subdir` files in (same rules as Keras:
    `cache_dir`, else $KERAS_HOME as read when Keras was imported, else ~/.keras; /tmp/.keras
    when that is not writable)."""
    import tempfile

    from keras.src.backend import config

    base = os.path.expanduser(cache_dir or config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, cache_subdir)


@contextlib.contextmanager
def offline_weights(architecture: str):
    """While the application is built: its weight file comes from the Keras cache or not at all."""
    import urllib.parse

    from keras.src.utils import file_utils

    original = file_utils.get_file

    def get_file(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None, **kwargs):
        fname = fname or os.path.basename(urllib.parse.urlsplit(origin or "").path)
        directory = keras_cache_dir(cache_subdir, cache_dir)
        path = os.path.join(directory, fname)
        if os.path.isfile(path):
            return path
        raise ConfigError(f"{architecture} ImageNet weights need the file {fname} in {directory}/ (Keras' cache: "
                          f"$KERAS_HOME/models, default ~/.keras/models); nnrun never downloads it: "
                          f"copy it there from {origin}", "model.params.weights")

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original


def _check_data(p: KerasAppParams, data) -> float:
    """The factor from raw pixels to 0..255; ConfigError when the data does not suit the backbone."""
    shape = tuple(data.input_shape)
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ConfigError(f"keras_app needs images with 1 or 3 channels (height, width, channels); "
                          f"the data set gives inputs of shape {shape}", "model.name")
    minimum = ARCHITECTURES[p.architecture][1]
    sides = [d for d in shape[:2] if d is not None]
    if sides and min(sides) < minimum:
        raise ConfigError(f"{p.architecture} needs images of at least {minimum}x{minimum} pixels; the data set "
                          f"gives {shape[0]}x{shape[1]} (raise the image size or choose another architecture)",
                          "model.params.architecture")
    pre = data.preprocess or {}
    if pre.get("mean") is not None:
        raise ConfigError(f"keras_app applies {p.architecture}'s own preprocessing (preprocess_input); "
                          "remove data.params.normalize", "data.params.normalize")
    return 255.0 * float(pre.get("rescale", 1.0) if data.preprocess else 1.0)


def preprocessing(inputs, architecture: str, factor: float):
    """Raw images (1 or 3 channels) -> the architecture's inputs: `to_rgb` (grayscale only),
    `input_rescale` (x factor: to 0..255), then its preprocess_input (`preprocess_input`)."""
    import importlib

    import keras
    from keras import ops

    x = inputs
    if inputs.shape[-1] == 1:
        x = keras.layers.Concatenate(axis=-1, dtype="float32", name=TO_RGB)([x, x, x])
    # Always present (also when factor is 1): it marks the data set's rescaling as handled here.
    x = keras.layers.Rescaling(factor, dtype="float32", name=RESCALE)(x)
    module = importlib.import_module(f"keras.applications.{ARCHITECTURES[architecture][0]}")
    flip, scale, offset = affine_preprocess(module.preprocess_input)
    if flip:
        x = ops.flip(x, axis=-1)  # RGB -> BGR (caffe mode); a keras op, serialised with the graph
    if scale != [1.0] * 3 or offset != [0.0] * 3:
        x = keras.layers.Rescaling(scale, offset=offset, dtype="float32", name=PREPROCESS)(x)
    return x


@register("model", "keras_app", KerasAppParams)
def build(p: KerasAppParams, data):
    """keras.applications backbone (flat graph, its own preprocess_input inside) + new classifier head."""
    import keras

    from nnrun.components.models.heads import logits_head

    inputs = keras.Input(shape=(None, None, data.input_shape[-1]), name=INPUT)
    x = preprocessing(inputs, p.architecture, _check_data(p, data))
    constructor = getattr(keras.applications, p.architecture)
    weights = "imagenet" if p.weights == "imagenet" else None
    with offline_weights(p.architecture), warnings.catch_warnings():
        # MobileNets warn that an input of unknown size gets their 224 px weights: the only ones.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"keras\.src\.applications\.")
        backbone = constructor(include_top=False, weights=weights, input_tensor=x, pooling=None)
    if p.bn_momentum is not None:  # a plain attribute of the layer (and of its config)
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = p.bn_momentum
    pool = keras.layers.GlobalAveragePooling2D if p.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    features = pool(name=POOL)(backbone.output)
    outputs = logits_head(features, data.num_classes, p.dropout)
    return keras.Model(inputs, outputs, name=p.architecture.lower())

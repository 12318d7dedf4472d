"""The model's input and its first layers: the data set's preprocessing, carried inside the model.

Rescaling and normalisation live in the model (stock Keras `Rescaling` and `Normalization`
layers holding the training split's statistics), not in the data pipeline. So a run's model,
`nnrun evaluate`, `nnrun predict` and an exported model all take the raw inputs the data set
gives (uint8 pixels, token ids) and there is one preprocessing path, not several copies that can
drift apart. The layers compute in float32 whatever the dtype policy: raw pixels and
statistics in bfloat16 would lose digits before the first convolution.
"""

from __future__ import annotations

RESCALE, NORMALIZE = "input_rescale", "input_normalize"


def preprocess_layers(x, preprocess: dict | None):
    """Apply DataBundle.preprocess ({"rescale", "mean", "std"}) to the symbolic tensor `x`."""
    import keras

    if not preprocess:
        return x
    if preprocess.get("rescale", 1.0) != 1.0:
        x = keras.layers.Rescaling(preprocess["rescale"], dtype="float32", name=RESCALE)(x)
    if preprocess.get("mean") is not None:
        variance = [float(s) ** 2 for s in preprocess["std"]]
        x = keras.layers.Normalization(axis=-1, mean=preprocess["mean"], variance=variance, dtype="float32",
                                       name=NORMALIZE)(x)
    return x


def image_input(data, name: str = "image"):
    """(inputs, x): a float Input for raw images of any height and width with the data set's
    channels, and `x` after the data set's preprocessing layers."""
    import keras

    inputs = keras.Input(shape=(None, None, data.input_shape[-1]), name=name)
    return inputs, preprocess_layers(inputs, data.preprocess)


def has_preprocessing(model) -> bool:
    """Whether `model` (or a model nested in it) already holds the preprocessing layers."""
    for layer in model.layers:
        if layer.name in (RESCALE, NORMALIZE) or (hasattr(layer, "layers") and has_preprocessing(layer)):
            return True
    return False


def with_preprocessing(model, data):
    """`model`, preceded by the data set's preprocessing layers when its builder (e.g. a plugin's)
    did not build them itself: a single-input model of raw images of any size."""
    import keras

    needed = data.preprocess and (data.preprocess.get("rescale", 1.0) != 1.0 or data.preprocess.get("mean"))
    if not needed or has_preprocessing(model) or len(model.inputs) != 1:
        return model
    inputs = keras.Input(shape=model.inputs[0].shape[1:], name="raw_" + model.inputs[0].name.split(":")[0])
    return keras.Model(inputs, model(preprocess_layers(inputs, data.preprocess)), name=model.name)

"""What every explainer shares: the target score, batched input gradients, map normalisation.

An explainer turns images `x` (N, H, W, C) and per-image target classes (N,) into a raw
attribution (`attribute`) and a display heatmap (N, H, W) in [0, 1] (`heatmap`). Raw
attributions are averageable, which is what lets SmoothGrad wrap any explainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Score = Literal["logit", "probability"]
EPS = 1e-12


@dataclass
class Explanation:
    raw: np.ndarray  # what `attribute` returned (saved as .npy)
    heatmap: np.ndarray  # (N, H, W) in [0, 1]
    per_image: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. IG completeness error


class Explainer:
    """Base class; subclasses implement `attribute` and say what their raw output is."""

    raw_description = ""

    def __init__(self, model):
        self.model = model
        self.info: dict = {}  # facts for the manifest (layer used, steps, baseline, ...)

    def attribute(self, x: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def heatmap(self, raw: np.ndarray) -> np.ndarray:
        """Pixel attributions (N, H, W, C) -> per-pixel magnitude summed over channels."""
        return normalise(np.abs(raw).sum(axis=-1))

    def per_image(self, x, targets, raw, batch_size) -> dict[str, np.ndarray]:
        return {}

    def explain(self, x: np.ndarray, targets: np.ndarray, batch_size: int = 32) -> Explanation:
        x = np.asarray(x, np.float32)
        targets = np.asarray(targets, np.int32)
        raw = self.attribute(x, targets, batch_size)
        return Explanation(raw, self.heatmap(raw), self.per_image(x, targets, raw, batch_size))


def normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max each map to [0, 1]; a constant map becomes all zeros (never NaN)."""
    maps = np.asarray(maps, np.float32)
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return np.where(span > EPS, (maps - low) / np.maximum(span, EPS), 0.0).astype(np.float32)


def target_score(tf, outputs, targets, score: Score):
    """Per-sample score of each sample's own target class: the logit or its softmax probability."""
    outputs = tf.cast(outputs, tf.float32)
    if score == "probability":
        outputs = tf.nn.softmax(outputs, axis=-1)
    return tf.gather(outputs, tf.cast(targets, tf.int32), axis=1, batch_dims=1)


def single_output(model):
    from nnrun.errors import UsageError

    if len(model.outputs) != 1:
        raise UsageError(f"model {model.name!r} has {len(model.outputs)} outputs; explainers need one (class scores)")
    return model.outputs[0]


def gradient_fn(model, score: Score):
    """A compiled function (x, targets) -> (scores, d score / d x), samples independent.

    `training=False` keeps BatchNorm in inference mode, so a batch gives exactly the gradients of
    its samples one by one and the gradient of the summed scores is every sample's own gradient.
    """
    from nnrun.engine.runtime import import_tensorflow

    tf = import_tensorflow()

    @tf.function(reduce_retracing=True)
    def fn(x, targets):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = target_score(tf, model(x, training=False), targets, score)
            total = tf.reduce_sum(scores)  # inside the tape, or it is not recorded
        return scores, tf.cast(tape.gradient(total, x), tf.float32)

    return fn


def outputs_of(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Model outputs (float32 logits) in batches; direct calls, not `predict` (no tf.data noise)."""
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False), np.float32)
                           for i in range(0, len(x), batch_size)])


def scores_of(model, x: np.ndarray, targets: np.ndarray, score: Score, batch_size: int) -> np.ndarray:
    """Target scores of `x` in batches, without gradients."""
    from nnrun.engine.runtime import import_tensorflow

    tf = import_tensorflow()
    return target_score(tf, outputs_of(model, x, batch_size), targets, score).numpy().astype(np.float64)


def validate_options(component, values: dict):
    """Validate command-line options as `component`'s params; errors name the option."""
    from pydantic import ValidationError

    from nnrun.errors import UsageError

    try:
        return component.params.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "options"
        if error["type"] == "extra_forbidden":
            raise UsageError(f"{option} does not apply to the {component.name} explainer") from None
        raise UsageError(f"{option}: {error['msg']}") from None

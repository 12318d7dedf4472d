"""The score an explainer attributes: each sample's own target class, as a logit or a softmax
probability. A leaf module: the image explainers (base.py) and the token path (tokens.py) both
differentiate it."""

from __future__ import annotations

from typing import Literal

Score = Literal["logit", "probability"]


def target_score(tf, outputs, targets, score: Score):
    """Per-sample score of each sample's own target class: the logit or its softmax probability."""
    outputs = tf.cast(outputs, tf.float32)
    if score == "probability":
        outputs = tf.nn.softmax(outputs, axis=-1)
    return tf.gather(outputs, tf.cast(targets, tf.int32), axis=1, batch_dims=1)

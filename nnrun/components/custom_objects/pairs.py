"""Keras loss and metric for siamese pairs; predictions are stacked embeddings (B, 2, E).

Label convention (everywhere in nnrun): y = 1 means the two items are the same class
(similar), y = 0 different. Hadsell et al. (2006) use the opposite (Y = 0 similar).
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-12  # sqrt(max(d2, eps)): finite gradient when the two embeddings coincide


def pair_distance(embeddings):
    """Euclidean distance (not squared) between the two embeddings of each pair: (B, 2, E) -> (B,)."""
    e = ops.cast(embeddings, "float32")
    d2 = ops.sum(ops.square(e[:, 0] - e[:, 1]), axis=-1)
    return ops.sqrt(ops.maximum(d2, EPSILON))


@keras.saving.register_keras_serializable(package="nnrun")
class ContrastiveLoss(keras.losses.Loss):
    """Hadsell et al. 2006 contrastive loss, y = 1 similar:  L = y * d^2 / 2 + (1 - y) * max(0, m - d)^2 / 2.

    d is the Euclidean distance (not its square) of the two embeddings; the hinge is squared.
    This is the paper's formula with the label flipped (the paper writes Y = 0 for similar).
    """

    def __init__(self, margin: float = 1.0, name: str = "contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        d = pair_distance(y_pred)
        y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        similar = 0.5 * ops.square(d)
        dissimilar = 0.5 * ops.square(ops.maximum(self.margin - d, 0.0))
        return y * similar + (1.0 - y) * dissimilar

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def _pair_correct(y_true, y_pred, threshold):
    same = ops.cast(pair_distance(y_pred) <= threshold, "float32")
    return ops.cast(ops.equal(same, ops.reshape(ops.cast(y_true, "float32"), (-1,))), "float32")


@keras.saving.register_keras_serializable(package="nnrun")
class PairAccuracy(keras.metrics.MeanMetricWrapper):
    """Fraction of pairs classified right by "same iff distance <= threshold" (a fixed threshold).

    Used per epoch; the final `val_pair_accuracy` instead chooses its threshold on the training
    pairs (nnrun.engine.metrics).
    """

    def __init__(self, threshold: float = 0.5, name: str = "pair_accuracy", dtype=None):
        super().__init__(_pair_correct, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}

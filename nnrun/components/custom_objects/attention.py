"""Additive (Bahdanau) attention pooling over a sequence, with a learned or given query.

`keras.layers.AdditiveAttention` has no W1/W2 projections (it scores `v . tanh(q + k)` on
the raw vectors), so this layer projects values and query with Dense layers first.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nnrun")
class AdditiveAttentionPooling(keras.layers.Layer):
    """score_t = v^T tanh(W1 h_t + W2 q); weights = masked softmax over t; context = sum_t w_t h_t.

    call(values (B, T, D), query (B, Dq) or None, mask (B, T) bool, True = attend) returns
    (context (B, D), weights (B, T)). Masked positions get weight exactly 0; a row with no
    unmasked position gives a zero context. With `query=None` the layer uses its learned query
    vector (`learned_query=True`), which makes it a pooling layer for any sequence model.
    """

    def __init__(self, units: int = 64, learned_query: bool = True, query_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.learned_query = learned_query
        self.query_dim = query_dim
        self.w1 = keras.layers.Dense(units, use_bias=False, name="w1")  # projects the values (keys)
        self.w2 = keras.layers.Dense(units, use_bias=True, name="w2")  # projects the query
        self.v = keras.layers.Dense(1, use_bias=False, name="v")
        self.supports_masking = True

    def build(self, values_shape, query_shape=None):
        dim = values_shape[-1]
        self.w1.build(values_shape)
        qdim = query_shape[-1] if query_shape is not None else (self.query_dim or dim)
        self.w2.build((None, qdim))
        self.v.build((None, None, self.units))
        if self.learned_query:
            self.query = self.add_weight(name="query", shape=(qdim,), initializer="random_normal")

    def call(self, values, query=None, mask=None):
        if query is None:
            if not self.learned_query:
                raise ValueError("AdditiveAttentionPooling(learned_query=False) needs a query")
            query = ops.broadcast_to(ops.expand_dims(self.query, 0), (ops.shape(values)[0], self.query.shape[0]))
        projected = self.w1(values) + ops.expand_dims(self.w2(query), 1)  # (B, T, U)
        scores = ops.squeeze(self.v(ops.tanh(projected)), -1)  # (B, T)
        if mask is not None:
            mask = ops.cast(mask, "bool")
            scores = ops.where(mask, scores, ops.cast(-1e9, scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        if mask is not None:
            weights = weights * ops.cast(mask, weights.dtype)  # exact zeros, incl. fully masked rows
        context = ops.sum(ops.expand_dims(weights, -1) * values, axis=1)
        return context, weights

    def compute_mask(self, values, mask=None):
        return [None, None]  # pooled outputs have no time axis

    def compute_output_shape(self, values_shape, query_shape=None):
        return (values_shape[0], values_shape[-1]), (values_shape[0], values_shape[1])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "learned_query": self.learned_query,
                "query_dim": self.query_dim}

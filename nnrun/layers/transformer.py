"""Layers of the `transformer` encoder classifier, with explicit padding masks.

Masks are passed explicitly (bool, True = real token / attend) rather than through Keras'
implicit mask propagation, because the optional CLS token adds a position the implicit mask
of `Embedding(mask_zero=True)` would not know about.
"""

from __future__ import annotations

import keras
from keras import ops

LN_EPSILON = 1e-6  # Keras' default 1e-3 is far from the 1e-6/1e-5 transformers are tuned with


@keras.saving.register_keras_serializable(package="nnrun")
class PaddingMask(keras.layers.Layer):
    """Token ids (B, T) -> bool mask (B, T [+1 for CLS]): True where the token is not padding."""

    def __init__(self, pad_id: int = 0, cls_token: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.pad_id, self.cls_token = pad_id, cls_token

    def call(self, tokens):
        mask = ops.not_equal(tokens, self.pad_id)
        if self.cls_token:
            mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
        return mask

    def compute_output_spec(self, tokens):
        length = None if tokens.shape[1] is None else tokens.shape[1] + int(self.cls_token)
        return keras.KerasTensor((tokens.shape[0], length), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id, "cls_token": self.cls_token}


@keras.saving.register_keras_serializable(package="nnrun")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding + learned absolute position embedding, optionally after a learned CLS vector.

    Positions count from the start, so padding appended at the end changes nothing for the
    real tokens. `positions=False` gives a position-blind embedding (bag-of-tokens baselines).
    """

    def __init__(self, vocab_size: int, max_length: int, dim: int, cls_token: bool = False,
                 positions: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.dim = vocab_size, max_length, dim
        self.cls_token, self.positions = cls_token, positions
        self.tokens = keras.layers.Embedding(vocab_size, dim, name="tokens")
        self.position_table = (
            keras.layers.Embedding(max_length + int(cls_token), dim, name="positions") if positions else None
        )

    def build(self, tokens_shape):
        self.tokens.build(tokens_shape)
        if self.position_table is not None:
            self.position_table.build((None,))
        if self.cls_token:
            self.cls = self.add_weight(name="cls", shape=(self.dim,), initializer="random_normal")

    def call(self, tokens):
        x = self.tokens(tokens)
        if self.cls_token:
            cls = ops.broadcast_to(ops.reshape(ops.cast(self.cls, x.dtype), (1, 1, self.dim)),
                                   (ops.shape(x)[0], 1, self.dim))
            x = ops.concatenate([cls, x], axis=1)
        if self.position_table is not None:
            x = x + ops.expand_dims(self.position_table(ops.arange(ops.shape(x)[1])), 0)
        return x

    def compute_output_shape(self, tokens_shape):
        length = None if tokens_shape[1] is None else tokens_shape[1] + int(self.cls_token)
        return (tokens_shape[0], length, self.dim)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "max_length": self.max_length,
                "dim": self.dim, "cls_token": self.cls_token, "positions": self.positions}


@keras.saving.register_keras_serializable(package="nnrun")
class EncoderBlock(keras.layers.Layer):
    """Pre-LN transformer block: x + Drop(MHA(LN(x))), then x + Drop(MLP(LN(x))); padding keys masked."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_dim, self.dropout = dim, heads, mlp_dim, dropout
        self.ln1 = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln1")
        self.attention = keras.layers.MultiHeadAttention(heads, dim // heads, dropout=dropout, name="mha")
        self.ln2 = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln2")
        self.mlp_in = keras.layers.Dense(mlp_dim, activation="gelu", name="mlp_in")
        self.mlp_out = keras.layers.Dense(dim, name="mlp_out")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, x_shape, padding_mask_shape=None):
        self.ln1.build(x_shape)
        self.attention.build(x_shape, x_shape)
        self.ln2.build(x_shape)
        self.mlp_in.build(x_shape)
        self.mlp_out.build(tuple(x_shape[:-1]) + (self.mlp_dim,))

    def call(self, x, padding_mask=None, training=None):
        attention_mask = None
        if padding_mask is not None:
            attention_mask = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)  # (B, 1, S): keys only
        h = self.ln1(x)
        h = self.attention(h, h, attention_mask=attention_mask, training=training)
        x = x + self.drop(h, training=training)
        h = self.mlp_out(self.mlp_in(self.ln2(x)))
        return x + self.drop(h, training=training)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_dim": self.mlp_dim,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="nnrun")
class SequencePooling(keras.layers.Layer):
    """(B, T, D) -> (B, D): "cls" takes position 0; "mean" averages the unmasked positions."""

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("cls", "mean"):
            raise ValueError(f"unknown pooling mode {mode!r}")
        self.mode = mode

    def call(self, x, padding_mask=None):
        if self.mode == "cls":
            return x[:, 0]
        if padding_mask is None:
            return ops.mean(x, axis=1)
        weights = ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return (x_shape[0], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

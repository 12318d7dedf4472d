"""`transformer`: encoder classifier over token ids on `keras.layers.MultiHeadAttention`.

Token + learned position embeddings, pre-LayerNorm blocks (LN eps 1e-6) and a final LN, dropout,
and a padding mask (token id 0) honoured by attention (padding keys get no weight) and by the
pooling: `cls` (a learned CLS token), `mean` (over real tokens) or `attention` (additive
attention pooling with a learned query). Positions count from the start, so appending padding
leaves the output unchanged. `num_layers: 0` with `positions: false` and `pooling: mean` is a
bag-of-tokens baseline.

Built from stock Keras layers and `keras.ops` only (no custom layer classes), so a checkpoint or
an export loads with plain `keras.saving.load_model` in a process that never imports nnrun.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nnrun.errors import ConfigError
from nnrun.registry import Params, register

LN_EPSILON = 1e-6  # Keras' default 1e-3 is far from the 1e-6/1e-5 transformers are tuned with
PAD_ID = 0


class TransformerParams(Params):
    dim: int = Field(64, gt=0, description="model width (embedding size)")
    num_layers: int = Field(2, ge=0, description="encoder blocks (0: embeddings + pooling only)")
    num_heads: int = Field(4, gt=0, description="attention heads; must divide dim")
    mlp_dim: int = Field(128, gt=0, description="hidden width of each block's MLP")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on embeddings, attention weights and residual branches")
    pooling: Literal["cls", "mean", "attention"] = Field("cls", description="how the sequence becomes one vector")
    attention_units: int = Field(64, gt=0, description="hidden units of additive attention pooling")
    positions: bool = Field(True, description="add learned position embeddings (false: order-blind)")
    max_length: int | None = Field(None, gt=0, description="longest sequence; default the data set's max_length")
    vocab_size: int | None = Field(None, gt=1, description="token ids 0..vocab_size-1; default the data set's vocab_size")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")

    @model_validator(mode="after")
    def _check(self):
        if self.dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide dim {self.dim}")
        return self


def _from_data(value, data, key: str):
    if value is not None:
        return value
    if key not in data.meta:
        raise ConfigError(f"model.params.{key} is required: the data set does not provide it")
    return int(data.meta[key])


@register("model", "transformer", TransformerParams)
def build(p: TransformerParams, data):
    """Transformer encoder classifier (pre-LN, padding mask from id 0, cls/mean/attention pooling)."""
    import keras
    from keras import ops

    from nnrun.components.models.heads import logits_head

    vocab_size = _from_data(p.vocab_size, data, "vocab_size")
    max_length = _from_data(p.max_length, data, "max_length")
    cls = p.pooling == "cls"
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    mask = ops.not_equal(tokens, PAD_ID)  # (B, T) True = real token
    x = keras.layers.Embedding(vocab_size, p.dim, name="token_embedding")(tokens)
    if cls:  # a learned CLS vector in front: a one-row embedding looked up with id 0
        first = ops.zeros_like(tokens[:, :1])
        x = keras.layers.Concatenate(axis=1, name="with_cls")(
            [keras.layers.Embedding(1, p.dim, name="cls_embedding")(first), x])
        mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
    if p.positions:  # positions count from the start, so padding appended at the end changes nothing
        positions = ops.cumsum(ops.ones_like(mask, dtype="int32"), axis=1) - 1
        x = keras.layers.Add(name="add_positions")(
            [x, keras.layers.Embedding(max_length + int(cls), p.dim, name="position_embedding")(positions)])
    x = keras.layers.Dropout(p.dropout, name="embedding_dropout")(x)
    for i in range(p.num_layers):
        x = encoder_block(x, mask, p, f"block{i + 1}")
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="final_ln")(x)  # pre-LN needs it
    if p.pooling == "attention":
        x = attention_pooling(x, mask, p.attention_units)
    elif p.pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x, mask=mask)
    else:
        x = x[:, 0]
    outputs = logits_head(x, data.num_classes, p.head_dropout)
    return keras.Model(tokens, outputs, name="transformer")


def encoder_block(x, mask, p: TransformerParams, name: str):
    """Pre-LN block: x + Drop(MHA(LN(x))), then x + Drop(MLP(LN(x))); padding keys get no weight."""
    import keras
    from keras import ops

    layers = keras.layers
    h = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln1")(x)
    h = layers.MultiHeadAttention(p.num_heads, p.dim // p.num_heads, dropout=p.dropout, name=f"{name}_mha")(
        h, h, attention_mask=ops.expand_dims(mask, 1))  # (B, 1, S): mask the keys only
    x = layers.Add(name=f"{name}_add1")([x, layers.Dropout(p.dropout, name=f"{name}_drop1")(h)])
    h = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln2")(x)
    h = layers.Dense(p.mlp_dim, activation="gelu", name=f"{name}_mlp_in")(h)
    h = layers.Dense(p.dim, name=f"{name}_mlp_out")(h)
    return layers.Add(name=f"{name}_add2")([x, layers.Dropout(p.dropout, name=f"{name}_drop2")(h)])


def attention_pooling(x, mask, units: int):
    """Additive (Bahdanau) attention pooling with a learned query: score_t = v^T tanh(W1 h_t + W2 q).

    With a learned query, W2 q is a learned vector, i.e. exactly the bias of the W1 projection,
    so this is Dense(units, tanh) then Dense(1): stock layers, and an exported model loads
    without nnrun. (custom_objects.attention.AdditiveAttentionPooling, the registered layer,
    takes a query from the caller.) Padding positions get weight exactly 0.
    """
    import keras
    from keras import ops

    hidden = keras.layers.Dense(units, activation="tanh", name="attention_w")(x)
    scores = ops.squeeze(keras.layers.Dense(1, use_bias=False, name="attention_v")(hidden), -1)
    weights = keras.layers.Softmax(axis=-1, name="attention_weights")(scores, mask=mask)
    weights = weights * ops.cast(mask, weights.dtype)  # exact zeros at padding
    return ops.sum(ops.expand_dims(weights, -1) * x, axis=1)

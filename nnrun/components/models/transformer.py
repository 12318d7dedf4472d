"""`transformer`: encoder classifier over token ids on `keras.layers.MultiHeadAttention`.

Token + learned position embeddings, pre-LayerNorm blocks (LN eps 1e-6) and a final LN, dropout,
and a padding mask (token id 0) honoured by attention (padding keys get no weight) and by the
pooling: `cls` (a learned CLS token), `mean` (over real tokens) or `attention` (additive
attention pooling with a learned query). Positions count from the start, so appending padding
leaves the output unchanged. `num_layers: 0` with `positions: false` and `pooling: mean` is a
bag-of-tokens baseline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nnrun.errors import ConfigError
from nnrun.registry import Params, register


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

    from nnrun.components.models.heads import logits_head
    from nnrun.layers.attention import AdditiveAttentionPooling
    from nnrun.layers.transformer import (
        LN_EPSILON, EncoderBlock, PaddingMask, SequencePooling, TokenAndPositionEmbedding,
    )

    vocab_size = _from_data(p.vocab_size, data, "vocab_size")
    max_length = _from_data(p.max_length, data, "max_length")
    cls = p.pooling == "cls"
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    mask = PaddingMask(cls_token=cls, name="padding_mask")(tokens)
    x = TokenAndPositionEmbedding(vocab_size, max_length, p.dim, cls_token=cls, positions=p.positions,
                                  name="embedding")(tokens)
    x = keras.layers.Dropout(p.dropout, name="embedding_dropout")(x)
    for i in range(p.num_layers):
        x = EncoderBlock(p.dim, p.num_heads, p.mlp_dim, p.dropout, name=f"block{i + 1}")(x, mask)
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="final_ln")(x)  # pre-LN needs it
    if p.pooling == "attention":
        x, _ = AdditiveAttentionPooling(p.attention_units, name="attention_pool")(x, mask=mask)
    else:
        x = SequencePooling(p.pooling, name=f"{p.pooling}_pool")(x, mask)
    outputs = logits_head(x, data.num_classes, p.head_dropout)
    return keras.Model(tokens, outputs, name="transformer")

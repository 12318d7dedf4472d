"""Registry entries (kind "layer") for the reusable layers here; TensorFlow-free to import.

A "layer" builder takes its params and returns a Keras layer instance, for any sequence model
(the transformer uses additive attention pooling through `pooling: attention`).
"""

from __future__ import annotations

from pydantic import Field

from nnrun.registry import Params, register


class AdditiveAttentionParams(Params):
    units: int = Field(64, gt=0, description="hidden units of the score MLP (W1, W2: D -> units; v: units -> 1)")
    learned_query: bool = Field(True, description="learn a query vector (pooling); false: the caller passes the query")
    query_dim: int | None = Field(None, gt=0, description="size of the learned query; default the value size")


@register("layer", "additive_attention", AdditiveAttentionParams)
def build_additive_attention(p: AdditiveAttentionParams):
    """Bahdanau attention pooling v^T tanh(W1 h + W2 q), masked softmax; returns (context, weights)."""
    from nnrun.components.custom_objects.attention import AdditiveAttentionPooling

    return AdditiveAttentionPooling(p.units, learned_query=p.learned_query, query_dim=p.query_dim)

"""`siamese`: one shared encoder (any registered model) embeds both images of a pair.

The encoder is built with its classifier head sized to `embedding_dim`, so its outputs are
the embedding; both images go through the same layers (same weights) and each embedding is
L2-normalised. Output: (B, 2, embedding_dim) in float32, the input of the `contrastive` loss.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from nnrun.registry import Params, register


class SiameseParams(Params):
    encoder: dict[str, Any] = Field(
        {"name": "resnet", "params": {"stages": [16, 32], "blocks_per_stage": 1}},
        description="shared encoder: {name: <model>, params: {...}}; its head width becomes embedding_dim",
    )
    embedding_dim: int = Field(32, gt=0, description="embedding size")

    @field_validator("encoder")
    @classmethod
    def _check_encoder(cls, value):
        from nnrun import registry

        if set(value) - {"name", "params"} or not isinstance(value.get("name"), str):
            raise ValueError("encoder must be {name: <model>, params: {...}}")
        if value["name"] == "siamese":
            raise ValueError("the encoder cannot itself be siamese")
        from pydantic import ValidationError

        from nnrun.config.messages import describe_error
        from nnrun.errors import ConfigError

        try:
            schema = registry.get("model", value["name"]).params
        except ConfigError as exc:  # names the nearest valid model
            raise ValueError(f"name: {exc}") from None
        try:
            params = schema.model_validate(value.get("params") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in ("params", *first["loc"]))
            raise ValueError(f"{where}: {describe_error(first, schema)}") from None
        return {"name": value["name"], "params": params.model_dump(mode="json")}


@register("model", "siamese", SiameseParams)
def build(p: SiameseParams, data):
    """Siamese embedding model: a shared encoder applied to both images, L2-normalised embeddings."""
    import keras

    from nnrun import registry
    from nnrun.components.data.base import DataBundle

    component = registry.get("model", p.encoder["name"])
    item_shape = tuple(data.input_shape[1:])
    item_data = DataBundle({}, item_shape, p.embedding_dim, meta=data.meta, preprocess=data.preprocess)
    encoder = component.builder(component.params.model_validate(p.encoder["params"]), item_data)
    pairs = keras.Input(shape=(2, *[None] * (len(item_shape) - 1), item_shape[-1]), name="pair")
    # TimeDistributed calls the same encoder on pair[:, 0] and pair[:, 1]: shared weights.
    x = keras.layers.TimeDistributed(encoder, name="shared_encoder")(pairs)
    x = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalise")(x)
    return keras.Model(pairs, x, name="siamese")

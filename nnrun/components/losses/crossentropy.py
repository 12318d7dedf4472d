"""`crossentropy`: softmax cross-entropy on the model's logits, one-hot or sparse labels."""

from __future__ import annotations

from pydantic import Field, model_validator

from nnrun.registry import Params, register


class CrossentropyParams(Params):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="mix one-hot targets with uniform")
    sparse: bool = Field(
        False, description="integer labels (SparseCategoricalCrossentropy); false: one-hot labels"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.sparse and self.label_smoothing:
            raise ValueError("label_smoothing needs one-hot labels: set sparse: false")
        return self


@register("loss", "crossentropy", CrossentropyParams)
def build(p: CrossentropyParams):
    """Softmax cross-entropy from logits (categorical or sparse), with label smoothing."""
    import keras

    if p.sparse:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=p.label_smoothing)

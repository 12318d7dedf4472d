"""`focal`: focal loss (Lin et al. 2017) on logits, categorical or binary, via Keras' built-ins.

FL = -alpha_t (1 - p_t)^gamma log p_t. Categorical: p = softmax(logits), alpha a scalar or one
weight per class. Binary: p = sigmoid(logits) per output (one-vs-rest on one-hot labels),
alpha_t = alpha for positives and 1 - alpha for negatives. gamma = 0 with alpha unset is plain
cross-entropy. Unlike the seed, probabilities are clipped by Keras, so log(0) cannot occur.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nnrun.registry import Params, register


class FocalParams(Params):
    mode: Literal["categorical", "binary"] = Field(
        "categorical", description="categorical: softmax over classes; binary: sigmoid per output"
    )
    gamma: float = Field(2.0, ge=0, description="focusing exponent; 0 gives (alpha-weighted) cross-entropy")
    alpha: float | list[float] | None = Field(
        None,
        description="class weight: categorical takes a scalar or one per class; binary a scalar in (0, 1) "
        "weighting positives (negatives get 1 - alpha); null: no weighting",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="mix targets with uniform (categorical) or 0.5 (binary)")
    from_logits: bool = Field(True, description="inputs are logits (nnrun models output logits)")

    @model_validator(mode="after")
    def _check(self):
        alpha = self.alpha
        if isinstance(alpha, list):
            if self.mode == "binary":
                raise ValueError("binary focal loss takes a scalar alpha, not a list")
            if not alpha or min(alpha) <= 0:
                raise ValueError("alpha must be a non-empty list of weights > 0")
        elif alpha is not None:
            if self.mode == "binary" and not 0 < alpha < 1:
                raise ValueError(f"binary alpha must be in (0, 1), got {alpha}")
            if alpha <= 0:
                raise ValueError(f"alpha must be > 0, got {alpha}")
        return self


@register("loss", "focal", FocalParams)
def build(p: FocalParams):
    """Focal loss (categorical or binary, alpha scalar/per-class, gamma) on one-hot labels."""
    import keras

    if p.mode == "binary":
        # Keras ignores alpha unless apply_class_balancing=True.
        return keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=p.alpha is not None, alpha=0.25 if p.alpha is None else p.alpha,
            gamma=p.gamma, from_logits=p.from_logits, label_smoothing=p.label_smoothing, name="focal",
        )
    return keras.losses.CategoricalFocalCrossentropy(
        alpha=1.0 if p.alpha is None else p.alpha, gamma=p.gamma, from_logits=p.from_logits,
        label_smoothing=p.label_smoothing, name="focal",
    )

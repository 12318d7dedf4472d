"""`smoothgrad`: SmoothGrad (Smilkov et al. 2017), noise averaging around any other explainer.

Averages the base explainer's raw attributions over `samples` copies of the input with Gaussian
noise of std `noise` * (max - min) of each image, then makes the heatmap from the average the
way the base does (so `base: gradcam` averages class activation maps, `base: gradient` gradients).

Token inputs: the noise is added in embedding space, to the token Embedding's output at the real
(non-padding) positions, with std `noise` * (max - min) of that sequence's embedding values; the
base's per-token attributions (gradient x input, or IG from the padding baseline) are averaged.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from nnrun.explain.base import Explainer, validate_options
from nnrun.registry import Params, register


class SmoothGradParams(Params):
    base: Literal["gradient", "gradcam", "gradcam++", "integrated-gradients"] = Field(
        "gradient", description="explainer whose attributions are averaged"
    )
    samples: int = Field(16, ge=1, le=1024, description="noisy copies per image")
    noise: float = Field(0.15, ge=0, le=2, description="noise std as a fraction of each image's value range "
                                                       "(token sequences: of its embedding values' range)")
    seed: int = Field(0, ge=0, description="noise seed")
    base_params: dict[str, Any] = Field(default_factory=dict, description="parameters of the base explainer")


class SmoothGrad(Explainer):
    def __init__(self, model, p: SmoothGradParams):
        super().__init__(model)
        from nnrun import registry

        component = registry.get("explainer", p.base)
        self.base = component.builder(validate_options(component, p.base_params), model)
        self.p = p
        self.raw_description = f"mean over noisy inputs of: {self.base.raw_description}"
        if self.base.token_description:
            self.token_description = f"mean over noisy embeddings of: {self.base.token_description}"
        self.info = {"base": p.base, "samples": p.samples, "noise": p.noise, **self.base.info}

    def attribute(self, x, targets, batch_size):
        rng = np.random.default_rng(self.p.seed)
        span = (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
        total = None
        for _ in range(self.p.samples):
            noisy = (x + rng.normal(0.0, 1.0, x.shape) * self.p.noise * span).astype(np.float32)
            raw = self.base.attribute(noisy, targets, batch_size).astype(np.float64)
            total = raw if total is None else total + raw
        return (total / self.p.samples).astype(np.float32)

    def attribute_tokens(self, inp, targets, batch_size):
        from dataclasses import replace

        rng = np.random.default_rng(self.p.seed)
        e, real = inp.embeddings, inp.real[..., None]
        span = np.array([np.ptp(row[mask[:, 0]]) if mask.any() else 0.0 for row, mask in zip(e, real)])
        span = span[:, None, None]
        self.base._token_model = self.token_model  # one traced gradient function, shared
        total = None
        for _ in range(self.p.samples):
            noisy = (e + rng.normal(0.0, 1.0, e.shape) * self.p.noise * span * real).astype(np.float32)
            raw = self.base.attribute_tokens(replace(inp, embeddings=noisy), targets, batch_size).astype(np.float64)
            total = raw if total is None else total + raw
        self.info.update(self.base.info)
        self.info["noise_space"] = "token embedding (real positions only)"
        return (total / self.p.samples).astype(np.float32)

    def heatmap(self, raw):
        return self.base.heatmap(raw)


@register("explainer", "smoothgrad", SmoothGradParams)
def build(p: SmoothGradParams, model):
    """SmoothGrad: average any explainer's attributions over noisy copies of the input."""
    return SmoothGrad(model, p)

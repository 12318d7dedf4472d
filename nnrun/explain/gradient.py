"""`gradient`: plain input gradients of the target score (Simonyan et al. 2014).

Noisy on its own; it is what SmoothGrad averages by default. On token inputs: gradient x input
in embedding space, sum_d (d score / d e_td) * e_td per token t (signed; AllenNLP's
SimpleGradient before its normalisation).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from nnrun.explain.base import Explainer, gradient_fn
from nnrun.explain.score import Score
from nnrun.registry import Params, register


class GradientParams(Params):
    score: Score = Field("logit", description="differentiated score: the logit or the softmax probability")


class Gradient(Explainer):
    raw_description = "input gradients (H, W, C) of the target score"
    token_description = ("gradient x input per token (T,): sum over the embedding dimension of "
                         "d score / d embedding * embedding")

    def __init__(self, model, score: Score):
        super().__init__(model)
        self.score = score
        self.grad = gradient_fn(model, score)
        self.info = {"score": score}

    def attribute(self, x, targets, batch_size):
        return np.concatenate([self.grad(x[i:i + batch_size], targets[i:i + batch_size])[1].numpy()
                               for i in range(0, len(x), batch_size)])

    def attribute_tokens(self, inp, targets, batch_size):
        from nnrun.explain.tokens import per_token

        _, grads = self.token_model.gradients(inp, targets, self.score, batch_size)
        self.info["attribution"] = "gradient x input (embedding space), summed per token"
        return per_token(grads * inp.embeddings, inp.real)


@register("explainer", "gradient", GradientParams)
def build(p: GradientParams, model):
    """Input gradients of the target class score (saliency); the default base of smoothgrad."""
    return Gradient(model, p.score)

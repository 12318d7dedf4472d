"""`gradcam`: Grad-CAM (Selvaraju et al. 2017) on a conv layer's activations.

Correct where the seed was not: gradients of the target class's pre-softmax score (the logit),
channel weights averaged over the spatial axes (1, 2) per sample, ReLU, bilinear upsampling to
the input size and min-max normalisation (an all-zero map stays zero). For conv -> global
average pool -> dense, the channel weight is exactly w_kc / (H * W).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from nnrun.explain.base import Explainer, normalise
from nnrun.registry import Params, register


class GradCAMParams(Params):
    layer: str | None = Field(
        None, description="conv layer to explain ('name' or 'submodel/name'); default the last layer with a 4-D output"
    )


def gradcam_weights(tf, activations, grads):
    """alpha_k = mean over (i, j) of d y_c / d A_k(i, j), per sample."""
    return tf.reduce_mean(grads, axis=(1, 2))


class CAM(Explainer):
    """Class activation map with channel weights from `weights(tf, A, dy/dA)` -> (N, K)."""

    raw_description = "class activation map (H, W) after ReLU, upsampled, before normalisation"

    def __init__(self, model, layer: str | None, weights=gradcam_weights):
        super().__init__(model)
        from nnrun.engine.runtime import import_tensorflow
        from nnrun.explain.score import target_score
        from nnrun.explain.target_layer import activation_model, find_layer

        tf = import_tensorflow()
        path, chain = find_layer(model, layer)
        self.info = {"layer": path}
        grad_model = activation_model(model, chain)

        @tf.function(reduce_retracing=True)
        def cam(x, targets):
            with tf.GradientTape() as tape:
                activations, logits = grad_model(x, training=False)
                # Samples are independent (inference mode): the sum's gradient is each sample's own.
                total = tf.reduce_sum(target_score(tf, logits, targets, "logit"))
            grads = tf.cast(tape.gradient(total, activations), tf.float32)
            activations = tf.cast(activations, tf.float32)
            alpha = weights(tf, activations, grads)
            maps = tf.nn.relu(tf.einsum("nhwk,nk->nhw", activations, alpha))
            return tf.image.resize(maps[..., None], tf.shape(x)[1:3], method="bilinear")[..., 0]

        self._cam = cam

    def attribute(self, x, targets, batch_size):
        parts = [self._cam(x[i:i + batch_size], targets[i:i + batch_size]).numpy()
                 for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float32)

    def heatmap(self, raw):
        return normalise(raw)


@register("explainer", "gradcam", GradCAMParams)
def build(p: GradCAMParams, model):
    """Grad-CAM: logit gradients averaged over space weight a conv layer's channels; ReLU, upsampled."""
    return CAM(model, p.layer)

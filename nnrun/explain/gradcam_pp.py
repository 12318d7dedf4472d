"""`gradcam++`: Grad-CAM++ (Chattopadhyay et al. 2018), Grad-CAM with pixel-weighted gradients.

With g = dS_c/dA (S_c the logit, through an exponential as in the paper):
w_k = sum_ij a_ij * ReLU(g_ij), a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3); a_ij = 0 where g = 0.
"""

from __future__ import annotations

from nnrun.explain.gradcam import CAM, GradCAMParams
from nnrun.registry import register


def gradcam_pp_weights(tf, activations, grads):
    g2 = tf.square(grads)
    g3 = g2 * grads
    total = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
    denominator = 2.0 * g2 + total * g3
    safe = tf.where(tf.abs(denominator) > 1e-12, denominator, tf.ones_like(denominator))
    alpha = tf.where(tf.abs(denominator) > 1e-12, g2 / safe, tf.zeros_like(g2))
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


@register("explainer", "gradcam++", GradCAMParams)
def build(p: GradCAMParams, model):
    """Grad-CAM++: channel weights from positive gradients weighted per pixel; sharper for several objects."""
    return CAM(model, p.layer, weights=gradcam_pp_weights)

"""`mixup` and `cutmix`: mix pairs of examples of a batch, in-graph, after batching.

Written here instead of keras.layers.MixUp / CutMix because those draw from a stateful
SeedGenerator: a resumed run would mix differently. These draw every random number from a
stateless key of (seed, epoch, step), so resume is exact; they also take the one-hot labels
the pipeline already produces and support a switch-off epoch and a per-batch probability.
"""

from __future__ import annotations

from pydantic import Field

from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register


class MixParams(Params):
    alpha: float = Field(0.2, gt=0, description="Beta(alpha, alpha) concentration of the mixing weight")
    probability: float = Field(1.0, ge=0, le=1, description="fraction of batches that are mixed")
    switch_off_epoch: int | None = Field(None, ge=1, description="from this epoch (1-based) on, no mixing")
    per_sample: bool = Field(True, description="one weight per example (as Keras' MixUp); false: one per batch (the paper)")


def _beta(tf, shape, key, alpha):
    k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    g1 = tf.random.stateless_gamma(shape, seed=k1, alpha=alpha)
    g2 = tf.random.stateless_gamma(shape, seed=k2, alpha=alpha)
    return g1 / (g1 + g2)


class _Mix(Technique):
    priority = 50

    def __init__(self, p: MixParams, ctx, name: str):
        if ctx.label_mode != "onehot":
            raise ConfigError("needs one-hot labels (a classification loss with sparse: false)", f"train.techniques.{name}")
        if ctx.image_size is None:
            raise ConfigError("works on image batches only", f"train.techniques.{name}")
        self.p, self.name = p, name
        self.alpha_override = None  # set by progressive_resizing's regularisation ramp: epoch -> alpha

    def alpha(self, epoch: int) -> float:
        return self.alpha_override(epoch) if self.alpha_override else self.p.alpha

    def active(self, epoch: int) -> bool:
        return self.p.switch_off_epoch is None or epoch + 1 < self.p.switch_off_epoch

    def epoch_state(self, epoch: int) -> dict:
        return {f"{self.name}_alpha": self.alpha(epoch) if self.active(epoch) else 0.0}

    def record(self) -> dict:
        return self.p.model_dump()

    def _weights(self, tf, batch, epoch, key):
        """Per-example weight of the example itself (1.0 where the batch is not mixed)."""
        alphas = tf.constant([max(self.alpha(e), 1e-6) for e in range(self._epochs)], tf.float32)
        active = tf.constant([self.active(e) for e in range(self._epochs)])
        e = tf.minimum(epoch, self._epochs - 1)
        k_lam, k_apply = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        lam = _beta(tf, [batch] if self.p.per_sample else [1], k_lam, tf.gather(alphas, e))
        lam = tf.broadcast_to(lam, [batch])
        apply = tf.logical_and(tf.gather(active, e),
                               tf.random.stateless_uniform([], seed=k_apply) < self.p.probability)
        return tf.where(apply, lam, tf.ones_like(lam))


class MixUp(_Mix):
    def __init__(self, p, ctx):
        super().__init__(p, ctx, "mixup")
        self._epochs = ctx.epochs

    def batch_transform(self, images, labels, epoch, key):
        import tensorflow as tf

        k_weights, k_perm = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        batch = tf.shape(images)[0]
        lam = self._weights(tf, batch, epoch, k_weights)
        partner = tf.argsort(tf.random.stateless_uniform([batch], seed=k_perm))
        lam_x = tf.cast(tf.reshape(lam, [-1, 1, 1, 1]), images.dtype)
        images = lam_x * images + (1 - lam_x) * tf.gather(images, partner)
        lam_y = tf.reshape(lam, [-1, 1])
        labels = lam_y * labels + (1 - lam_y) * tf.gather(labels, partner)
        return images, labels


class CutMix(_Mix):
    def __init__(self, p, ctx):
        super().__init__(p, ctx, "cutmix")
        self._epochs = ctx.epochs

    def batch_transform(self, images, labels, epoch, key):
        import tensorflow as tf

        k_weights, k_perm, k_box = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        shape = tf.shape(images)
        batch, h, w = shape[0], shape[1], shape[2]
        lam = self._weights(tf, batch, epoch, k_weights)
        partner = tf.argsort(tf.random.stateless_uniform([batch], seed=k_perm))
        cut = tf.sqrt(1.0 - lam)  # box side fraction, so the box area is 1 - lam
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        centre = tf.random.stateless_uniform([batch, 2], seed=k_box)
        cy, cx = centre[:, 0] * hf, centre[:, 1] * wf
        y0 = tf.clip_by_value(tf.round(cy - cut * hf / 2), 0, hf)
        y1 = tf.clip_by_value(tf.round(cy + cut * hf / 2), 0, hf)
        x0 = tf.clip_by_value(tf.round(cx - cut * wf / 2), 0, wf)
        x1 = tf.clip_by_value(tf.round(cx + cut * wf / 2), 0, wf)
        rows = tf.range(hf)[None, :, None]
        cols = tf.range(wf)[None, None, :]
        box = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
               & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
        images = tf.where(box[..., None], tf.gather(images, partner), images)
        # Labels follow the pasted area actually used (after clipping at the border).
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (hf * wf)
        lam_y = tf.reshape(kept, [-1, 1])
        labels = lam_y * labels + (1 - lam_y) * tf.gather(labels, partner)
        return images, labels


@register("technique", "mixup", MixParams)
def mixup(p: MixParams, ctx) -> MixUp:
    """Mixup (Zhang et al. 2018): convex combinations of example pairs and their one-hot labels, per batch."""
    return MixUp(p, ctx)


@register("technique", "cutmix", MixParams)
def cutmix(p: MixParams, ctx) -> CutMix:
    """CutMix (Yun et al. 2019): paste a box from a partner image; labels mixed by the box area."""
    return CutMix(p, ctx)

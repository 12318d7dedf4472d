"""`progressive_resizing`: train on small images first, growing to full size (FFCV,
EfficientNetV2). One fit, one optimizer state, one early-stopping history: the size is a
function of the epoch inside the pipeline, not a restart per size."""

from __future__ import annotations

from pydantic import Field, model_validator

from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register


class ProgressiveResizingParams(Params):
    sizes: list[int] | None = Field(None, description="image side per stage, e.g. [16, 24, 32]")
    epochs: list[int] | None = Field(None, description="epochs per stage (same length as sizes; the last stage runs to the end)")
    start_size: int | None = Field(None, ge=8, description="instead of sizes: first size ...")
    end_size: int | None = Field(None, ge=8, description="... last size ...")
    num_stages: int = Field(3, ge=2, description="... in this many equal-length stages")
    eval_size: int | None = Field(None, ge=8, description="validation image size (default: the last size)")
    mixup_alpha: list[float] | None = Field(
        None, description="regularisation ramp [first, last]: mixup/cutmix alpha grows linearly with the stage"
    )

    @model_validator(mode="after")
    def _check(self):
        if (self.sizes is None) == (self.start_size is None):
            raise ValueError("give either sizes (with epochs) or start_size and end_size")
        if self.sizes is not None:
            if not self.sizes or min(self.sizes) < 8:
                raise ValueError("sizes must be a non-empty list of sizes >= 8")
            if self.epochs is None or len(self.epochs) != len(self.sizes) or min(self.epochs) < 1:
                raise ValueError("epochs must list >= 1 epochs for each entry of sizes")
        elif self.end_size is None:
            raise ValueError("end_size is required with start_size")
        if self.mixup_alpha is not None and (len(self.mixup_alpha) != 2 or min(self.mixup_alpha) < 0):
            raise ValueError("mixup_alpha must be [first, last] with values >= 0")
        return self


class ProgressiveResizing(Technique):
    name = "progressive_resizing"
    priority = 10  # resize before mixing

    def __init__(self, p: ProgressiveResizingParams, ctx):
        if ctx.image_size is None:
            raise ConfigError("works on image data only", "train.techniques.progressive_resizing")
        self.p = p
        self.ctx = ctx
        if p.sizes is not None:
            sizes, lengths = list(p.sizes), list(p.epochs)
        else:
            step = (p.end_size - p.start_size) / (p.num_stages - 1)
            sizes = [int(round(p.start_size + i * step)) for i in range(p.num_stages)]
            lengths = [max(1, ctx.epochs // p.num_stages)] * p.num_stages
        self.stage_of_epoch = []
        for stage, length in enumerate(lengths):
            self.stage_of_epoch += [stage] * length
        self.stage_of_epoch = (self.stage_of_epoch + [len(sizes) - 1] * ctx.epochs)[: ctx.epochs]
        self.sizes = sizes
        self.eval_size = p.eval_size or sizes[-1]
        self._eval_resize = None
        self.native = ctx.image_size
        if p.mixup_alpha is not None:
            mixers = [t for name, t in ctx.techniques.items() if name in ("mixup", "cutmix")]
            if not mixers:
                raise ConfigError("mixup_alpha ramp needs mixup or cutmix listed before progressive_resizing",
                                  "train.techniques.progressive_resizing")
            for mixer in mixers:
                mixer.alpha_override = self.alpha_for_epoch

    def size_for_epoch(self, epoch: int) -> int:
        return self.sizes[self.stage_of_epoch[min(epoch, len(self.stage_of_epoch) - 1)]]

    def alpha_for_epoch(self, epoch: int) -> float:
        first, last = self.p.mixup_alpha
        stage = self.stage_of_epoch[min(epoch, len(self.stage_of_epoch) - 1)]
        frac = stage / max(1, len(self.sizes) - 1)
        return first + (last - first) * frac

    def batch_transform(self, images, labels, epoch, key):
        import tensorflow as tf

        if "random_resized_crop" in self.ctx.techniques:  # it resizes its crops to size_tensor itself
            return images, labels
        size = self.size_tensor(tf, epoch)
        return tf.image.resize(images, tf.stack([size, size]), antialias=True), labels

    def size_tensor(self, tf, epoch):
        """size_for_epoch inside the graph, for a tensor epoch."""
        table = tf.constant([self.size_for_epoch(e) for e in range(len(self.stage_of_epoch))], tf.int32)
        return tf.gather(table, tf.minimum(tf.cast(epoch, tf.int32), len(self.stage_of_epoch) - 1))

    def eval_layers(self) -> list:
        import keras

        if self.eval_size == self.native:
            return []
        if self._eval_resize is None:  # one layer instance, reused by every pipeline and the export
            self._eval_resize = keras.layers.Resizing(self.eval_size, self.eval_size, interpolation="bilinear",
                                                      antialias=True, dtype="float32", name="eval_resize")
        return [self._eval_resize]

    def epoch_state(self, epoch: int) -> dict:
        return {"image_size": self.size_for_epoch(epoch)}

    def record(self) -> dict:
        return {"sizes_by_epoch": [self.size_for_epoch(e) for e in range(len(self.stage_of_epoch))],
                "eval_size": self.eval_size}


@register("technique", "progressive_resizing", ProgressiveResizingParams)
def build(p: ProgressiveResizingParams, ctx) -> ProgressiveResizing:
    """Image-size schedule over epochs inside the pipeline, with an optional mixup-alpha ramp."""
    return ProgressiveResizing(p, ctx)

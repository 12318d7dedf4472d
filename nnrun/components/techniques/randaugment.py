"""`randaugment` (Cubuk et al. 2020) and `trivialaugment` (TrivialAugmentWide, Müller & Hutter 2021).

RandAugment applies `num_ops` operations, each drawn uniformly from 14 (identity, autocontrast,
equalize, rotate, solarize, color, posterize, contrast, brightness, sharpness, shear x/y,
translate x/y) at one `magnitude` on a 0-30 scale; TrivialAugment applies one operation with a
magnitude drawn uniformly from that scale, over wider ranges. The magnitude tables are
torchvision's; signed operations take a random sign. Translations are a fraction of the
current image size (torchvision's 150/331 and 32/224), so the ops work at whatever size
progressive resizing gives.

Written here rather than with keras.layers.RandAugment, which draws one set of operations per
call (that is, per batch) from a stateful seed generator: a resumed run would augment
differently, and a whole batch would share its operations. Here every example draws its own
operations, magnitudes and signs from the stateless key of (seed, epoch, step), inside the
graph (image_ops.py computes every op for the batch and keeps each example's own).
"""

from __future__ import annotations

from pydantic import Field

from nnrun.components.techniques import image_ops
from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register

OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
BINS = 31  # magnitudes 0..30
# op -> (value at magnitude 0, value at magnitude 30, signed); posterize in bits, solarize as a
# fraction of the range (its threshold), translate as a fraction of the size, rotate in degrees.
RANDAUGMENT = {"rotate": (0, 30, True), "solarize": (1, 0, False), "color": (0, 0.9, True),
               "posterize": (8, 4, False), "contrast": (0, 0.9, True), "brightness": (0, 0.9, True),
               "sharpness": (0, 0.9, True), "shear_x": (0, 0.3, True), "shear_y": (0, 0.3, True),
               "translate_x": (0, 150 / 331, True), "translate_y": (0, 150 / 331, True)}
TRIVIAL_WIDE = {"rotate": (0, 135, True), "solarize": (1, 0, False), "color": (0, 0.99, True),
                "posterize": (8, 2, False), "contrast": (0, 0.99, True), "brightness": (0, 0.99, True),
                "sharpness": (0, 0.99, True), "shear_x": (0, 0.99, True), "shear_y": (0, 0.99, True),
                "translate_x": (0, 32 / 224, True), "translate_y": (0, 32 / 224, True)}


class RandAugmentParams(Params):
    num_ops: int = Field(2, ge=1, le=10, description="operations applied to each image, one after another")
    magnitude: int = Field(9, ge=0, le=30, description="strength on torchvision's 0-30 scale (timm's rand-m9)")


class TrivialAugmentParams(Params):
    pass


def magnitude_value(table: dict, op: str, bins, tf):
    """The op's value at magnitude `bins` (a tensor of ints 0..30), torchvision's linspace; posterize
    rounds to whole bits as torchvision does."""
    start, end, _ = table[op]
    value = start + (end - start) * tf.cast(bins, tf.float32) / (BINS - 1)
    return tf.round(value) if op == "posterize" else value


class _Augment(Technique):
    priority = 20  # after flips / crops and resizing, before erasing and mixing

    def __init__(self, name: str, table: dict, num_ops: int, ctx):
        if ctx.image_size is None:
            raise ConfigError("works on image batches only", f"train.techniques.{name}")
        self.name, self.table, self.num_ops = name, table, num_ops
        self.top = 255.0

    def check(self, data) -> None:
        # Raw pixels reach the techniques: 0..255 for integer images, 0..1 assumed for float ones.
        self.top = 255.0 if "int" in data.input_dtype else 1.0

    def magnitudes(self, tf, key, n):
        raise NotImplementedError

    def batch_transform(self, images, labels, epoch, key):
        import tensorflow as tf

        n = tf.shape(images)[0]
        for round_key in tf.unstack(tf.random.experimental.stateless_split(key, self.num_ops)):
            k_op, k_mag, k_sign = tf.unstack(tf.random.experimental.stateless_split(round_key, 3))
            op = tf.random.stateless_uniform([n], seed=k_op, maxval=len(OPS), dtype=tf.int32)
            bins = self.magnitudes(tf, k_mag, n)
            sign = tf.where(tf.random.stateless_uniform([n], seed=k_sign) < 0.5, -1.0, 1.0)
            images = self.apply(tf, images, op, bins, sign)
        return images, labels

    def apply(self, tf, images, op, bins, sign):
        """Each example's op `op` (index into OPS) at magnitude `bins` with sign `sign`."""
        top, table = self.top, self.table

        def value(name):
            v = magnitude_value(table, name, bins, tf)
            return v * sign if table[name][2] else v

        def chosen(name):
            return tf.equal(op, OPS.index(name))

        size = tf.cast(tf.shape(images)[1:3], tf.float32)
        geometric = {"shear_x": 0.0, "shear_y": 0.0, "translate_x": 0.0, "translate_y": 0.0, "rotate": 0.0}
        for name in geometric:
            scale = size[1] if name == "translate_x" else size[0] if name == "translate_y" else 1.0
            geometric[name] = tf.where(chosen(name), value(name) * scale, 0.0)
        moved = image_ops.affine(images, geometric["shear_x"], geometric["shear_y"], geometric["translate_x"],
                                 geometric["translate_y"], geometric["rotate"], top)
        any_geometric = tf.reduce_any(tf.stack([chosen(n) for n in geometric]), axis=0)
        out = tf.where(any_geometric[:, None, None, None], moved, images)
        candidates = {
            "autocontrast": lambda: image_ops.autocontrast(images, top),
            "equalize": lambda: image_ops.equalize(images, top),
            "solarize": lambda: image_ops.solarize(images, value("solarize") * top, top),
            "posterize": lambda: image_ops.posterize(images, value("posterize"), top),
            "color": lambda: image_ops.color(images, 1.0 + value("color"), top),
            "contrast": lambda: image_ops.contrast(images, 1.0 + value("contrast"), top),
            "brightness": lambda: image_ops.brightness(images, 1.0 + value("brightness"), top),
            "sharpness": lambda: image_ops.sharpness(images, 1.0 + value("sharpness"), top),
        }
        for name, make in candidates.items():
            out = tf.where(chosen(name)[:, None, None, None], make(), out)
        return out

    def record(self) -> dict:
        return {"ops": list(OPS)}


class RandAugment(_Augment):
    def __init__(self, p: RandAugmentParams, ctx):
        super().__init__("randaugment", RANDAUGMENT, p.num_ops, ctx)
        self.p = p

    def magnitudes(self, tf, key, n):
        return tf.fill([n], self.p.magnitude)

    def record(self) -> dict:
        return {**self.p.model_dump(), **super().record()}


class TrivialAugment(_Augment):
    def __init__(self, p: TrivialAugmentParams, ctx):
        super().__init__("trivialaugment", TRIVIAL_WIDE, 1, ctx)

    def magnitudes(self, tf, key, n):
        return tf.random.stateless_uniform([n], seed=key, maxval=BINS, dtype=tf.int32)


@register("technique", "randaugment", RandAugmentParams)
def build_randaugment(p: RandAugmentParams, ctx) -> RandAugment:
    """RandAugment: num_ops random operations per image at one magnitude, per example and stateless."""
    return RandAugment(p, ctx)


@register("technique", "trivialaugment", TrivialAugmentParams)
def build_trivialaugment(p: TrivialAugmentParams, ctx) -> TrivialAugment:
    """TrivialAugmentWide: one random operation per image at a random magnitude, per example and stateless."""
    return TrivialAugment(p, ctx)


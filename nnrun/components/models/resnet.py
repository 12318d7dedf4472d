"""`resnet`: residual network with basic or bottleneck blocks (He et al. 2016).

Correct where the seed was not: every block takes a stride, and the projection shortcut
(1x1 conv + BN) carries the same stride whenever shape or stride changes. Convs before BN
have no bias; ReLU follows the add; the bottleneck puts its stride on the 3x3 conv ("v1.5",
as timm/torchvision). Stochastic depth drops the whole residual branch per sample.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nnrun.registry import Params, register


class ResNetParams(Params):
    block: Literal["basic", "bottleneck"] = Field("basic", description="residual block type")
    stages: list[int] = Field([16, 32, 64], min_length=1, description="base width of each stage")
    blocks_per_stage: int | list[int] = Field(2, description="blocks in each stage (one number or one per stage)")
    stem: Literal["small", "imagenet"] = Field(
        "small", description="small: 3x3/1 conv (for <=64 px); imagenet: 7x7/2 conv + 3x3/2 max-pool"
    )
    stem_width: int | None = Field(None, gt=0, description="stem channels; default the first stage width")
    stochastic_depth: float = Field(
        0.0, ge=0, lt=1, description="drop rate of the last block's residual branch; block l of L drops rate * l / L"
    )
    zero_init_residual: bool = Field(True, description="init each block's last BN gamma to 0 (block starts as identity)")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")
    bn_momentum: float = Field(
        0.9, gt=0, lt=1, description="BatchNorm moving-average momentum (0.9 = PyTorch's 0.1; Keras' 0.99 lags on short runs)"
    )

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.blocks_per_stage, list) and len(self.blocks_per_stage) != len(self.stages):
            raise ValueError(
                f"blocks_per_stage has {len(self.blocks_per_stage)} entries for {len(self.stages)} stages"
            )
        counts = self.blocks_per_stage if isinstance(self.blocks_per_stage, list) else [self.blocks_per_stage]
        if min(counts) < 1 or min(self.stages) < 1:
            raise ValueError("stages and blocks_per_stage must be >= 1")
        return self

    def block_counts(self) -> list[int]:
        b = self.blocks_per_stage
        return list(b) if isinstance(b, list) else [b] * len(self.stages)


def _conv_bn(x, filters, kernel, stride, name, momentum, gamma="ones", relu=True):
    from keras import layers

    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=momentum, epsilon=1e-5, gamma_initializer=gamma, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def residual_block(x, width, stride, block, drop_rate, zero_init, name, momentum=0.9):
    """One residual block; the shortcut is projected with the same stride when shapes change."""
    from keras import layers

    last_gamma = "zeros" if zero_init else "ones"
    if block == "basic":
        out_channels = width
        y = _conv_bn(x, width, 3, stride, f"{name}_a", momentum)
        y = _conv_bn(y, width, 3, 1, f"{name}_b", momentum, gamma=last_gamma, relu=False)
    else:
        out_channels = 4 * width
        y = _conv_bn(x, width, 1, 1, f"{name}_a", momentum)
        y = _conv_bn(y, width, 3, stride, f"{name}_b", momentum)
        y = _conv_bn(y, out_channels, 1, 1, f"{name}_c", momentum, gamma=last_gamma, relu=False)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, stride, f"{name}_proj", momentum, relu=False)
    if drop_rate > 0:
        # Stochastic depth (Huang et al. 2016): Dropout with noise_shape (batch, 1, 1, 1) drops the
        # whole residual branch per sample and scales kept ones by 1/keep; identity at inference.
        y = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop_path")(y)
    x = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(x)


def drop_rates(rate: float, total_blocks: int) -> list[float]:
    """Linear decay of survival: block l of L drops with rate * l / L (last block: `rate`)."""
    return [rate * (i + 1) / total_blocks for i in range(total_blocks)]


@register("model", "resnet", ResNetParams)
def build(p: ResNetParams, data):
    """ResNet classifier (basic/bottleneck, strided projection shortcuts, stochastic depth); any image size."""
    import keras
    from keras import layers

    from nnrun.components.models.heads import logits_head
    from nnrun.components.models.inputs import image_input

    inputs, x = image_input(data)
    stem_width = p.stem_width or p.stages[0]
    if p.stem == "small":
        x = _conv_bn(x, stem_width, 3, 1, "stem", p.bn_momentum)
    else:
        x = _conv_bn(x, stem_width, 7, 2, "stem", p.bn_momentum)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    counts = p.block_counts()
    rates = drop_rates(p.stochastic_depth, sum(counts))
    index = 0
    for s, (width, count) in enumerate(zip(p.stages, counts)):
        for b in range(count):
            stride = 2 if (s > 0 and b == 0) else 1
            x = residual_block(x, width, stride, p.block, rates[index], p.zero_init_residual,
                               f"s{s + 1}b{b + 1}", p.bn_momentum)
            index += 1
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = logits_head(x, data.num_classes, p.head_dropout)
    return keras.Model(inputs, outputs, name="resnet")

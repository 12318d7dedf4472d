"""`contrastive`: Hadsell et al. (2006) loss for siamese pairs (see components/custom_objects/pairs.py).

Labels: 1 = same (similar), 0 = different. The model outputs the two embeddings stacked,
(B, 2, E); d is their Euclidean distance and L = y d^2 / 2 + (1 - y) max(0, m - d)^2 / 2.
"""

from __future__ import annotations

from pydantic import Field

from nnrun.registry import Params, register


class ContrastiveParams(Params):
    margin: float = Field(
        1.0, gt=0, description="distance beyond which different pairs cost nothing (L2-normalised embeddings: d <= 2)"
    )


@register("loss", "contrastive", ContrastiveParams)
def build(p: ContrastiveParams):
    """Contrastive loss on pair embeddings (y=1 same): y d^2/2 + (1-y) max(0, m-d)^2/2, d Euclidean."""
    from nnrun.components.custom_objects.pairs import ContrastiveLoss

    return ContrastiveLoss(margin=p.margin)

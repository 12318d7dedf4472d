"""`sequences`: seeded variable-length token sequences whose label is an order relation.

Each sequence holds filler tokens (ids 3..vocab_size-1), exactly one token A (id 1) and one
token B (id 2), and is padded with id 0 to `max_length`. Label 1: A occurs before B.
Swapping A and B gives the same multiset of tokens with the opposite label, and the generator
draws both orders with equal probability, so P(label | token multiset) = 1/2: no
bag-of-tokens model can beat chance; a model must see positions (attention + position
embeddings). Difficulty: A and B close together is hard.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from nnrun.components.data.base import DataBundle, Split, standard_splits
from nnrun.components.data.shapes import SplitSizes
from nnrun.registry import register

PAD, TOKEN_A, TOKEN_B = 0, 1, 2
CLASS_NAMES = ["b_before_a", "a_before_b"]


class SequencesParams(SplitSizes):
    num_train: int = Field(4000, gt=0, le=1_000_000, description="training sequences")
    num_val: int = Field(1000, gt=0, le=1_000_000, description="validation sequences")
    vocab_size: int = Field(16, ge=4, le=100_000, description="token ids 0..vocab_size-1 (0 pad, 1 A, 2 B, rest filler)")
    min_length: int = Field(6, ge=2, description="shortest sequence (before padding)")
    max_length: int = Field(24, ge=2, le=4096, description="longest sequence; every sequence is padded to it")

    @model_validator(mode="after")
    def _check(self):
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        return self


def order_label(tokens: np.ndarray) -> np.ndarray:
    """The labelling rule: 1 where the first A comes before the first B (rows of token ids)."""
    return (np.argmax(tokens == TOKEN_A, axis=1) < np.argmax(tokens == TOKEN_B, axis=1)).astype(np.int32)


def generate(n: int, p: SequencesParams, stream: int) -> Split:
    """`n` sequences of split `stream` (0 train, 1 val, 2 test), deterministic in (seed, stream)."""
    rng = np.random.default_rng([p.seed, stream])
    labels = rng.permutation(np.arange(n) % 2).astype(np.int32)  # exactly balanced
    lengths = rng.integers(p.min_length, p.max_length + 1, n)
    x = rng.integers(TOKEN_B + 1, p.vocab_size, (n, p.max_length)) if p.vocab_size > 3 else np.full(
        (n, p.max_length), TOKEN_B + 1)
    x = np.where(np.arange(p.max_length)[None, :] < lengths[:, None], x, PAD)
    # two distinct positions per row, first < second, uniform over pairs within the length
    first = np.floor(rng.random(n) * lengths).astype(int)
    second = np.floor(rng.random(n) * (lengths - 1)).astype(int)
    second = second + (second >= first)
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    rows = np.arange(n)
    x[rows, lo] = np.where(labels == 1, TOKEN_A, TOKEN_B)
    x[rows, hi] = np.where(labels == 1, TOKEN_B, TOKEN_A)
    difficulty = (1 - (hi - lo - 1) / np.maximum(lengths - 2, 1)).astype(np.float32)
    return Split(x.astype(np.int32), labels, difficulty=np.clip(difficulty, 0, 1))


@register("dataset", "sequences", SequencesParams)
def build(p: SequencesParams) -> DataBundle:
    """Padded token sequences labelled "A before B" (order-dependent: bag-of-tokens is at chance)."""
    splits = standard_splits(generate, p)
    meta = {"vocab_size": p.vocab_size, "max_length": p.max_length, "pad_id": PAD}
    return DataBundle(splits, (p.max_length,), 2, list(CLASS_NAMES), meta=meta)

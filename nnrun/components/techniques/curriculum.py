"""`curriculum`: easy examples first (Bengio et al. 2009; Hacohen & Weinshall 2019).

Difficulty is scored once per run (and saved in the run directory, so a resumed run uses the
same scores). A pacing function maps the epoch to the fraction p(e) of the easiest examples in
use; epoch e's batches are drawn, inside tf.data, uniformly from that pool only. The seed's
version re-scored the whole data set for every batch and never advanced its epoch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register

SCORES_FILE = "curriculum_scores.npy"


class CurriculumParams(Params):
    difficulty: Literal["dataset", "loss"] = Field(
        "dataset",
        description="dataset: the per-example score the data set supplies (shapes: small objects and heavy "
                    "noise are hard); loss: per-example loss of a warm-up model",
    )
    warmup_epochs: int = Field(1, ge=1, description="with difficulty: loss, epochs of the warm-up model")
    pacing: Literal["linear", "root", "step", "exponential"] = Field("linear", description="p(epoch) shape")
    start: float = Field(0.3, gt=0, le=1, description="fraction of the easiest examples used in the first epoch")
    full_at_epoch: int = Field(5, ge=1, description="epoch (1-based) from which all examples are used")
    step_count: int = Field(4, ge=1, description="with pacing: step, number of increments")
    ordering: Literal["easy_first", "hard_first", "random"] = Field(
        "easy_first", description="hard_first = anti-curriculum; random = control with random scores"
    )
    class_balanced: bool = Field(True, description="rank within each class, so every pool keeps the class mix")


def pacing_fraction(p: CurriculumParams, epoch: int) -> float:
    """Fraction of the data in use at 0-based `epoch`: `start` at epoch 0, 1.0 from full_at_epoch - 1."""
    span = max(1, p.full_at_epoch - 1)
    t = min(1.0, epoch / span)
    if p.pacing == "linear":
        g = t
    elif p.pacing == "root":
        g = math.sqrt(t)
    elif p.pacing == "step":
        g = math.floor(t * p.step_count) / p.step_count
    else:  # exponential: geometric growth from start to 1
        return min(1.0, p.start * (1.0 / p.start) ** t)
    return min(1.0, p.start + (1.0 - p.start) * g)


def rank_order(scores: np.ndarray, labels: np.ndarray | None, class_balanced: bool) -> np.ndarray:
    """Indices from easiest to hardest; class-balanced ranks interleave the classes."""
    if not class_balanced or labels is None or labels.ndim != 1:
        return np.argsort(scores, kind="stable")
    rel = np.empty(len(scores), np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rel[idx[np.argsort(scores[idx], kind="stable")]] = (np.arange(len(idx)) + 0.5) / len(idx)
    return np.lexsort((scores, rel))


class Curriculum(Technique):
    name = "curriculum"

    def __init__(self, p: CurriculumParams, ctx):
        self.p, self.ctx = p, ctx
        self.scores: np.ndarray | None = None
        self.order: np.ndarray | None = None
        self.score_calls = 0  # how many times difficulty was computed in this process

    def check(self, data) -> None:
        if data.split("train").stream is not None:  # the pacing picks examples by index
            raise ConfigError("curriculum needs the training split in memory as one array (data.params.cache: "
                              "memory, and no storage_size)",
                              "train.techniques.curriculum")
        if self.p.difficulty == "dataset" and self.p.ordering != "random" and data.split("train").difficulty is None:
            raise ConfigError("this data set supplies no difficulty scores; use difficulty: loss",
                              "train.techniques.curriculum.difficulty")

    def prepare(self, ctx, data, scorer) -> None:
        if self.order is not None:
            return
        split = data.split("train")
        path = Path(ctx.run_dir) / SCORES_FILE if ctx.run_dir else None
        if path is not None and path.is_file():
            scores = np.load(path)
        else:
            scores = self._score(split, scorer)
            if path is not None:  # atomically: a kill mid-write must not break every later resume
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
                np.save(tmp, scores)
                os.replace(tmp, path)
        if len(scores) != len(split):
            raise ConfigError(f"curriculum scores cover {len(scores)} examples, the train split has {len(split)}",
                              "train.techniques.curriculum")
        self.scores = scores
        self.order = rank_order(scores, split.y, self.p.class_balanced)

    def _score(self, split, scorer) -> np.ndarray:
        self.score_calls += 1
        if self.p.ordering == "random":
            return np.random.default_rng(0).random(len(split)).astype(np.float32)
        if self.p.difficulty == "dataset":
            if split.difficulty is None:
                raise ConfigError("this data set supplies no difficulty scores; use difficulty: loss",
                                  "train.techniques.curriculum.difficulty")
            scores = np.asarray(split.difficulty, np.float32)
        else:
            scores = np.asarray(scorer(self.p.warmup_epochs), np.float32)
        return -scores if self.p.ordering == "hard_first" else scores

    def pool_size(self, epoch: int, n: int) -> int:
        return max(self.ctx.batch_size, min(n, math.ceil(pacing_fraction(self.p, epoch) * n)))

    def order_for_epoch(self, epoch, key, n: int, total: int):
        import tensorflow as tf

        if self.order is None:  # not prepared yet (the engine's shape check): default order
            return None
        sizes = tf.constant([self.pool_size(e, n) for e in range(self.ctx.epochs)], tf.int32)
        k = tf.gather(sizes, tf.minimum(tf.cast(epoch, tf.int32), self.ctx.epochs - 1))
        pool = tf.constant(self.order, tf.int32)[:k]
        reps = (total + k - 1) // k
        perm = tf.argsort(tf.random.stateless_uniform(tf.stack([reps, k]), seed=key), axis=1)
        return tf.reshape(tf.gather(pool, perm), [-1])[:total]

    def epoch_state(self, epoch: int) -> dict:
        n = len(self.order) if self.order is not None else 0
        return {"curriculum_fraction": round(pacing_fraction(self.p, epoch), 6),
                "curriculum_pool": self.pool_size(epoch, n) if n else None}

    def record(self) -> dict:
        return {**self.p.model_dump(),
                "fraction_by_epoch": [round(pacing_fraction(self.p, e), 4) for e in range(self.ctx.epochs)]}


@register("technique", "curriculum", CurriculumParams)
def build(p: CurriculumParams, ctx) -> Curriculum:
    """Curriculum learning: difficulty scored once, pacing p(epoch) over the easiest examples, in tf.data."""
    return Curriculum(p, ctx)

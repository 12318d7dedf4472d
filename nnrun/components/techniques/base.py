"""The hooks a technique may implement. Every hook is a pure function of the run seed, the
epoch and the step, so an interrupted run that resumes at any step replays the same batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TechniqueContext:
    """What techniques may read about the run (filled by the engine)."""

    epochs: int
    batch_size: int
    steps_per_epoch: int
    image_size: int | None  # the side the model trains on
    label_mode: str
    techniques: dict = field(default_factory=dict)  # name -> Technique, for techniques that cooperate
    run_dir: Any = None
    gradient_accumulation_steps: int = 1  # batches per optimizer step (train.gradient_accumulation_steps)
    stored_size: int | None = None  # the side of the stored images, when larger (image_folder's storage_size)


class Technique:
    name = "technique"
    priority = 50  # batch transforms and eval layers run in ascending priority (resize before mixing)
    crops_stored_images = False  # True: turns images stored larger than the training size into it

    def check(self, data) -> None:
        """Reject a data set this technique cannot use (ConfigError), before any run directory exists."""

    def prepare(self, ctx: TechniqueContext, data, build_model) -> None:
        """Once per run, before training (e.g. score curriculum difficulty)."""

    def epoch_state(self, epoch: int) -> dict:
        """Per-epoch state logged to metrics.jsonl (0-based epoch)."""
        return {}

    def order_for_epoch(self, epoch, key, n: int, total: int):
        """Indices (tf tensor, length `total`) to draw this epoch, or None for the default order."""
        return None

    def batch_transform(self, images, labels, epoch, key):
        """In-graph transform of one batch; `key` is a stateless seed for this (epoch, step)."""
        return images, labels

    def example_crop(self, epoch, key):
        """crops_stored_images techniques: the data.base.ExampleCrop of `epoch` (boxes from the
        stateless `key`, per example) that a source reading its examples one at a time fuses
        into the read; the engine then skips this technique's batch_transform."""
        raise NotImplementedError

    def eval_layers(self) -> list:
        """Keras layers that transform validation/test/predict inputs (e.g. the final image size).
        pipeline.eval_inputs applies them and exports put them inside the model, so both run
        the same code."""
        return []

    def phase_boundaries(self) -> list[int]:
        """Epochs at which training changes phase (e.g. unfreezing): `fit` is split there."""
        return []

    def before_segment(self, model, first_epoch: int) -> bool:
        """Set up the model for a fit segment starting at `first_epoch`; True if the trainable
        set changed (the engine then rebuilds the train function)."""
        return False

    def use_eval_weights(self, model) -> None:
        """Put the weights that validation and checkpoints use in place (e.g. the EMA)."""

    def use_train_weights(self, model) -> None:
        """Put the training weights back (before the backup and the next batch)."""

    def configure_optimizer(self, optimizer, model):
        """Adjust the optimizer the model is compiled with (e.g. per-layer learning rates)."""
        return optimizer

    def model_params(self, params: dict) -> dict:
        """Adjust the model's parameters before it is built."""
        return params

    def record(self) -> dict:
        """What run.json records about this technique."""
        return {}

"""The config schema: top-level sections and their typed, strictly checked fields.

Component parameters (`model.params`, `loss.params`, ...) are plain mappings here; each is
checked against its component's own schema by `nnrun.config.resolve`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_LIMIT = 64
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # for the JSON Schema; name_problem explains a mismatch


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a directory (None if it can), naming the rule that fails, since
    "not allowed" alone leaves a user guessing between the characters and the length."""
    shown = repr(name if len(name) <= 24 else name[:21] + "...")
    bad = [ch for ch in dict.fromkeys(name) if not (ch.isascii() and (ch.isalnum() or ch in "._-"))]
    if not name:
        return "'' is not allowed: a name cannot be empty"
    if bad:
        extra = " (names are never paths)" if "/" in bad or "\\" in bad else ""
        return (f"{shown} is not allowed: {', '.join(repr(ch) for ch in bad[:5])} "
                f"{'is not an ASCII letter, digit' if len(bad) == 1 else 'are not ASCII letters, digits'}, "
                f"'.', '_' or '-'{extra}")
    if len(name) > NAME_LIMIT:
        return f"{shown} is not allowed: it is {len(name)} characters; the limit is {NAME_LIMIT}"
    if not name[0].isalnum():
        return f"{shown} is not allowed: a name starts with a letter or digit, not {name[0]!r}"
    return None


def check_name(value):
    """Pydantic before-validator: a specific message instead of the pattern's generic one."""
    problem = name_problem(value) if isinstance(value, str) else None
    if problem:
        raise ValueError(problem)
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentRef(Section):
    """`{name: ..., params: {...}}`; a bare string is shorthand for `{name: ...}`."""

    name: str = Field(description="registered component name")
    params: dict[str, Any] = Field(default_factory=dict, description="component parameters")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"name": value} if isinstance(value, str) else value


class DataConfig(Section):
    dataset: str = Field(description="registered dataset name (see `nnrun components dataset`)")
    params: dict[str, Any] = Field(default_factory=dict, description="dataset parameters")
    batch_size: int = Field(64, gt=0, description="global batch size for training")
    eval_batch_size: int | None = Field(None, gt=0, description="batch size for validation/test; default batch_size")


class ModelConfig(ComponentRef):
    init_from: str | None = Field(
        None, description="initialise matching layers (same name and shapes) from a run directory, a directory of "
        "runs (its newest completed run), a .keras file or a .weights.h5 file; other layers (e.g. a head with "
        "another class count) start fresh"
    )
    init_checkpoint: Literal["best", "last"] = Field("best", description="with init_from a run: which checkpoint")

    @field_validator("init_from")
    @classmethod
    def _check_init_from(cls, value):
        if value is not None and not value.strip():
            raise ValueError("init_from must name a run directory or a .keras / .weights.h5 file")
        return value


class LossConfig(ComponentRef):
    pass


class ScheduleConfig(ComponentRef):
    name: str = Field("constant", description="learning-rate schedule name")
    epochs: int | None = Field(
        None, gt=0, description="horizon in epochs (default train.epochs); a resume that changes train.epochs keeps the old one"
    )


class OptimizerConfig(Section):
    name: str = Field("adam", description="registered optimizer name")
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (adamw, sgd) or L2-free decay")
    clipnorm: float | None = Field(None, gt=0, description="clip each gradient to this norm")
    params: dict[str, Any] = Field(default_factory=dict, description="optimizer-specific parameters")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="learning-rate schedule")


class EarlyStoppingConfig(Section):
    monitor: str = "val_loss"
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Section):
    epochs: int = Field(10, gt=0, description="number of epochs")
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16", "auto"] = Field(
        "float32", description="Keras dtype policy; auto: mixed_bfloat16 on a CPU with AVX512_BF16/AMX (no GPU), "
        "else float32 (run.json records the choice and why)"
    )
    jit_compile: bool = Field(False, description="XLA-compile the train step")
    steps_per_execution: int = Field(1, gt=0, description="batches per compiled call (fewer Python round trips)")
    gradient_accumulation_steps: int | None = Field(
        None, ge=2, le=1024, description="average the gradients of N batches per optimizer step (effective batch: "
        "N x data.batch_size, recorded in run.json); schedules still count batches"
    )
    monitor: str = Field("val_accuracy", description="metric that selects checkpoints/best.keras")
    early_stopping: EarlyStoppingConfig | None = Field(None, description="stop when `monitor` stops improving")
    backup_every_steps: int | None = Field(
        None, gt=0, description="also back up every N steps, so a killed run resumes mid-epoch (always at epoch ends)"
    )
    on_nan: Literal["stop", "rollback"] = Field(
        "stop", description="non-finite loss: stop (run failed) or roll back to the last backup with a lower lr"
    )
    max_rollbacks: int = Field(3, ge=0, description="with on_nan: rollback, give up after this many")
    rollback_lr_factor: float = Field(0.5, gt=0, lt=1, description="with on_nan: rollback, multiply the lr by this")
    techniques: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="technique name -> parameters (see `nnrun components technique`)"
    )

    @field_validator("techniques", mode="before")
    @classmethod
    def _empty_params(cls, value):
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value


class RuntimeConfig(Section):
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker", "tpu"] = Field(
        "auto", description="tf.distribute strategy; auto: mirrored over several GPUs, else TensorFlow's default (one device)"
    )
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="linear: multiply the learning rate by the number of replicas"
    )
    cpu_devices: int | None = Field(
        None, ge=1, le=64, description="split the CPU into N logical devices (mirrored on CPU, for tests)"
    )
    deterministic: bool = Field(True, description="bit-identical runs on one machine (op determinism)")
    threads: int | None = Field(None, gt=0, description="CPU threads for TensorFlow (intra and inter op)")
    runs_root: str = Field("runs", description="directory that holds <name>/<run-id>/ run directories")


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else sqlite:///<runs_root>/mlflow.db. "
        "Credentials go in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, never here (config.yaml is kept in "
        "the run directory)"
    )
    experiment: str | None = Field(None, description="experiment name; default MLFLOW_EXPERIMENT_NAME, else the run name")
    run_name: str | None = Field(None, description="MLflow run name; default the run directory's name")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on the MLflow run")
    log_checkpoint: bool = Field(True, description="upload checkpoints/best.keras as an artifact")
    parent_run_id: str | None = Field(
        None, description="make the run a child of this MLflow run (set by nnrun sweep and search for their trials)"
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, value):
        from urllib.parse import urlsplit

        if value is not None and urlsplit(value).password:
            raise ValueError("tracking_uri holds a password, and config.yaml is saved in the run directory; "
                             "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")
        return value


class TrackingConfig(Section):
    mlflow: MlflowConfig | None = Field(None, description="log the run to MLflow (pip install 'nnrun[mlflow]')")


class RunConfig(Section):
    name: str = Field(pattern=NAME_PATTERN, description="run name: letters, digits, . _ - (no paths)")
    seed: int = Field(0, ge=0, description="seed for weights, data order and augmentation")
    data: DataConfig
    model: ModelConfig
    loss: LossConfig = Field(default_factory=lambda: LossConfig(name="crossentropy"))
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="where else the run is logged")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value):
        return check_name(value)

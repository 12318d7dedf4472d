"""Validate a raw config into a resolved RunConfig, with one-line errors that name the key path.

Resolution fills every default, including each component's parameters, so the resolved
config written to a run directory is exactly what ran and can be rerun as-is.
"""

from __future__ import annotations


from pydantic import ValidationError

from nnrun import registry
from nnrun.config.messages import key_path, raise_validation, show_value
from nnrun.config.schema import RunConfig
from nnrun.errors import ConfigError

# (section path, registry kind, key holding the name, key holding the params)
COMPONENT_SLOTS = (
    (("data",), "dataset", "dataset", "params"),
    (("model",), "model", "name", "params"),
    (("loss",), "loss", "name", "params"),
    (("optimizer",), "optimizer", "name", "params"),
    (("optimizer", "schedule"), "schedule", "name", "params"),
)


def validate_params(kind: str, name: str, params: dict, path: tuple) -> dict:
    """Check `params` against the component's schema; return them with defaults filled."""
    schema = registry.get(kind, name).params
    try:
        validated = schema.model_validate(params or {})
    except ValidationError as exc:
        raise_validation(exc, schema, path)
    return validated.model_dump(mode="json")


def resolve(raw: dict) -> RunConfig:
    """Raw dict -> RunConfig with every component checked and every default filled."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping, got {show_value(raw)}")
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise_validation(exc, RunConfig)
    data = cfg.model_dump(mode="json")
    for section, kind, name_key, params_key in COMPONENT_SLOTS:
        node = data
        for part in section:
            node = node[part]
        try:
            registry.get(kind, node[name_key])
        except ConfigError as exc:
            raise ConfigError(str(exc), key_path(section, (name_key,))) from None
        node[params_key] = validate_params(kind, node[name_key], node[params_key], section + (params_key,))
    techniques = data["train"]["techniques"]
    for tech, params in list(techniques.items()):
        try:
            registry.get("technique", tech)
        except ConfigError as exc:
            raise ConfigError(str(exc), f"train.techniques.{tech}") from None
        techniques[tech] = validate_params("technique", tech, params, ("train", "techniques", tech))
    schedule = data["optimizer"]["schedule"]
    if schedule["name"] == "one_cycle" and schedule["params"].get("cycle_momentum"):
        if data["optimizer"]["name"] != "sgd" or not data["optimizer"]["params"].get("momentum"):
            raise ConfigError("cycle_momentum cycles SGD's momentum: needs optimizer sgd with momentum > 0 (got "
                              f"{data['optimizer']['name']})", "optimizer.schedule.params.cycle_momentum")
    policy = techniques.get("mixed_precision", {}).get("policy")
    if policy and data["train"]["precision"] not in ("float32", policy):
        raise ConfigError(f"policy {policy} conflicts with train.precision {data['train']['precision']}",
                          "train.techniques.mixed_precision")
    if "curriculum" in techniques and data["data"]["params"].get("cache", "memory") != "memory":
        raise ConfigError("curriculum needs the training split in memory (data.params.cache: memory)",
                          "train.techniques.curriculum")
    if data["runtime"]["strategy"] == "multi_worker":
        if data["train"]["backup_every_steps"]:
            raise ConfigError("not supported with runtime.strategy: multi_worker (its runs back up and resume "
                              "at epoch ends)", "train.backup_every_steps")
        curriculum = techniques.get("curriculum") or {}
        if curriculum.get("difficulty") == "loss" and curriculum.get("ordering") != "random":
            raise ConfigError("difficulty: loss (a warm-up model) is not supported with runtime.strategy: "
                              "multi_worker; use difficulty: dataset", "train.techniques.curriculum.difficulty")
    return RunConfig.model_validate(data)

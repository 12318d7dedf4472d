"""Validate a raw config into a resolved RunConfig, with one-line errors that name the key path.

Resolution fills every default, including each component's parameters, so the resolved
config written to a run directory is exactly what ran and can be rerun as-is.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nnrun import registry
from nnrun.config.loader import apply_overrides, load_raw
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


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) < 60 else text[:57] + "..."
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found:
                return found
    return None


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model = root
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _submodel(model.model_fields[part].annotation)
    return model


def _bounds(root: type[BaseModel], loc: tuple) -> str:
    parent = _model_at(root, loc[:-1])
    if parent is None or not isinstance(loc[-1], str) or loc[-1] not in parent.model_fields:
        return ""
    parts = []
    for meta in parent.model_fields[loc[-1]].metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sym} {_num(getattr(meta, attr))}")
    return " " + " and ".join(parts) if parts else ""


def describe_error(err: dict, root: type[BaseModel]) -> str:
    """One pydantic error -> a short human message (without the key path)."""
    kind, loc, got = err["type"], tuple(err["loc"]), err.get("input")
    ctx = err.get("ctx", {})
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        valid = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; valid keys: {', '.join(valid)}" if valid else "")
        return f"unknown key {loc[-1]!r}{hint}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number{_bounds(root, loc)}, got {_show(got)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer{_bounds(root, loc)}, got {_show(got)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {_show(got)}"
    if kind in ("string_type",):
        return f"expected a string, got {_show(got)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"expected a value {sym} {_num(bound)}, got {_show(got)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}, got {_show(got)}"
    if kind == "string_pattern_mismatch":
        return f"{_show(got)} is not allowed (letters, digits, '.', '_', '-' only, no paths)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_show(got)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_show(got)}"
    if kind in ("too_short", "too_long"):
        return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {_show(got)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{msg[0].lower()}{msg[1:]}" + (f", got {_show(got)}" if kind != "value_error" else "")


def _path(prefix: tuple, loc: tuple) -> str:
    out = ""
    for part in prefix + loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def raise_validation(exc: ValidationError, root: type[BaseModel], prefix: tuple = ()) -> typing.NoReturn:
    errors = exc.errors()
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 2 else ""
    if len(errors) == 2:  # "(and 1 more)" would hide a message as short as the count
        second = errors[1]
        more = f" (and {_path(prefix, tuple(second['loc']))}: {describe_error(second, root)})"
    raise ConfigError(describe_error(first, root) + more, _path(prefix, tuple(first["loc"]))) from None


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
        raise ConfigError(f"the config must be a mapping, got {_show(raw)}")
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
            raise ConfigError(str(exc), _path(section, (name_key,))) from None
        node[params_key] = validate_params(kind, node[name_key], node[params_key], section + (params_key,))
    techniques = data["train"]["techniques"]
    for tech, params in list(techniques.items()):
        try:
            registry.get("technique", tech)
        except ConfigError as exc:
            raise ConfigError(str(exc), f"train.techniques.{tech}") from None
        techniques[tech] = validate_params("technique", tech, params, ("train", "techniques", tech))
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """File + `base:` chain + `--set` overrides -> resolved RunConfig."""
    raw = load_raw(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return resolve(raw)


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def config_hash(cfg: RunConfig) -> str:
    """Stable hash of the resolved config (key order and formatting do not matter)."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_schema() -> dict:
    """JSON Schema of the config, with each component slot narrowed to its registered names."""
    schema = RunConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})

    def variants(kind: str, name_key: str) -> list[dict]:
        out = []
        for comp in registry.components(kind):
            params = comp.params.model_json_schema()
            for sub_name, sub in params.pop("$defs", {}).items():
                defs[sub_name] = sub
            out.append(
                {
                    "type": "object",
                    "properties": {name_key: {"const": comp.name}, "params": params},
                    "required": [name_key],
                    "description": comp.doc,
                }
            )
        return out

    for def_name, kind, name_key in (
        ("DataConfig", "dataset", "dataset"),
        ("ModelConfig", "model", "name"),
        ("LossConfig", "loss", "name"),
        ("OptimizerConfig", "optimizer", "name"),
        ("ScheduleConfig", "schedule", "name"),
    ):
        if def_name in defs:
            defs[def_name]["properties"][name_key]["enum"] = registry.names(kind)
            defs[def_name]["allOf"] = [
                {"if": {"properties": {name_key: {"const": v["properties"][name_key]["const"]}}},
                 "then": {"properties": {"params": v["properties"]["params"]}}}
                for v in variants(kind, name_key)
            ]
    return schema

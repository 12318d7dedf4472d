"""The config's JSON Schema (`nnrun schema`): the pydantic schema with every component slot
narrowed to its registered names and their params, for editors and the docs' config reference."""

from __future__ import annotations

from nnrun import registry
from nnrun.config.schema import RunConfig


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

"""Pydantic validation errors -> one line that names the key path and what was expected.

`raise_validation` is what every schema in nnrun (the config, component params, sweep files)
raises through, so every bad value reads the same way.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from nnrun.errors import ConfigError


def show_value(value: Any) -> str:
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
        return f"expected a number{_bounds(root, loc)}, got {show_value(got)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer{_bounds(root, loc)}, got {show_value(got)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {show_value(got)}"
    if kind in ("string_type",):
        return f"expected a string, got {show_value(got)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"expected a value {sym} {_num(bound)}, got {show_value(got)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}, got {show_value(got)}"
    if kind == "string_pattern_mismatch":
        return f"{show_value(got)} is not allowed (letters, digits, '.', '_', '-' only, no paths)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {show_value(got)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {show_value(got)}"
    if kind in ("too_short", "too_long"):
        return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {show_value(got)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{msg[0].lower()}{msg[1:]}" + (f", got {show_value(got)}" if kind != "value_error" else "")


def key_path(prefix: tuple, loc: tuple) -> str:
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
        more = f" (and {key_path(prefix, tuple(second['loc']))}: {describe_error(second, root)})"
    raise ConfigError(describe_error(first, root) + more, key_path(prefix, tuple(first["loc"]))) from None

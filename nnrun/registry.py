"""Name -> component tables, one per kind, with a typed parameter schema per entry.

Importing this module (and the component declarations) never imports TensorFlow: builders
import it lazily, so `nnrun validate` and `nnrun components` stay fast.
"""

from __future__ import annotations

import difflib
import importlib
import pathlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from nnrun.errors import ConfigError

KINDS = ("dataset", "model", "loss", "optimizer", "schedule", "technique", "explainer", "layer")

# Modules that declare components; importing them fills the tables.
CATALOG = (
    "nnrun.components.data.shapes",
    "nnrun.components.data.image_folder",
    "nnrun.components.data.npz",
    "nnrun.components.data.tfds_source",
    "nnrun.components.data.augment",
    "nnrun.components.models.resnet",
    "nnrun.components.models.keras_app",
    "nnrun.components.losses.crossentropy",
    "nnrun.components.data.sequences",
    "nnrun.components.data.pairs",
    "nnrun.components.models.transformer",
    "nnrun.components.models.siamese",
    "nnrun.components.losses.focal",
    "nnrun.components.losses.contrastive",
    "nnrun.components.custom_objects.catalog",
    "nnrun.components.optim.optimizers",
    "nnrun.components.optim.schedules",
    "nnrun.components.techniques.mixup",
    "nnrun.components.techniques.curriculum",
    "nnrun.components.techniques.progressive_resizing",
    "nnrun.components.techniques.stochastic_depth",
    "nnrun.components.techniques.mixed_precision",
    "nnrun.components.techniques.finetune",
    "nnrun.components.techniques.ema",
    "nnrun.components.techniques.randaugment",
    "nnrun.components.techniques.random_erasing",
    "nnrun.components.techniques.random_resized_crop",
    "nnrun.explain.gradcam",
    "nnrun.explain.gradcam_pp",
    "nnrun.explain.integrated_gradients",
    "nnrun.explain.gradient",
    "nnrun.explain.smoothgrad",
)


class Params(BaseModel):
    """Base of every component's parameter schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For components without parameters."""


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    params: type[Params]
    builder: Callable[..., Any]

    @property
    def doc(self) -> str:
        text = (self.builder.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""

    def describe(self) -> dict:
        """kind, name, doc and every parameter (name, type, default, required, doc), as
        `nnrun components` prints it and `--json` gives it (the docs' reference reads that)."""
        params = [
            {"name": n, "type": type_name(f.annotation),
             "default": None if f.is_required() else f.get_default(call_default_factory=True),
             "required": f.is_required(), "doc": f.description or ""}
            for n, f in self.params.model_fields.items()
        ]
        return {"kind": self.kind, "name": self.name, "doc": self.doc, "params": params}


def type_name(annotation) -> str:
    """A parameter's type as users write it: `int | null`, `adam|sgd`, `list[int]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args).replace("NoneType", "null")
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


_TABLES: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
_loaded = False


def register(kind: str, name: str, params: type[Params] = NoParams):
    """Decorator: register `builder` as component `name` of `kind`."""
    if kind not in _TABLES:
        raise ValueError(f"unknown component kind {kind!r}")

    def wrap(builder):
        if name in _TABLES[kind]:
            raise ValueError(f"{kind} {name!r} registered twice")
        _TABLES[kind][name] = Component(kind, name, params, builder)
        return builder

    return wrap


def load_catalog() -> None:
    global _loaded
    if not _loaded:
        for module in CATALOG:
            importlib.import_module(module)
        _loaded = True


LOADED_PLUGINS: list[str] = []  # recorded in run.json; later commands on the run must be given them again


def load_plugin(module_or_path: str) -> None:
    """Import a user plugin module (by dotted name or .py path) that calls `register`."""
    import importlib.util

    path = pathlib.Path(module_or_path)
    spec_name = str(path.resolve()) if path.suffix == ".py" else module_or_path
    if spec_name in LOADED_PLUGINS:
        return
    load_catalog()  # built-ins first, so a plugin cannot silently take a built-in name
    try:
        if path.suffix == ".py":
            if not path.is_file():
                raise ConfigError(f"plugin file not found: {module_or_path}")
            spec = importlib.util.spec_from_file_location(f"nnrun_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            importlib.import_module(module_or_path)
    except ImportError as exc:
        raise ConfigError(f"cannot import plugin {module_or_path!r}: {exc}") from exc
    LOADED_PLUGINS.append(spec_name)


def missing_plugins(recorded) -> list[str]:
    """The plugins a run directory records (run.json "plugins") that this process was not given
    with --plugin. Nothing a run directory names is ever imported: a directory someone hands you
    must not run code. A recorded file counts as given when a loaded plugin file has its name
    (runs move between machines); a module, when a loaded module has its dotted name."""
    if not isinstance(recorded, list):
        return [str(recorded)]
    loaded_files = {pathlib.PurePath(p).name for p in LOADED_PLUGINS if p.endswith(".py")}
    missing = []
    for item in recorded:
        text = str(item)
        given = pathlib.PurePath(text).name in loaded_files if text.endswith(".py") else text in LOADED_PLUGINS
        if not given:
            missing.append(text)
    return missing


def names(kind: str) -> list[str]:
    load_catalog()
    return sorted(_TABLES[kind])


def get(kind: str, name: str, path: str | None = None) -> Component:
    """Look up a component; an unknown name is a ConfigError with the nearest valid name."""
    load_catalog()
    table = _TABLES[kind]
    if name in table:
        return table[name]
    raise ConfigError(unknown_message(kind, name, list(table)), path)


def unknown_message(kind: str, name: Any, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(valid))}"
    return f"unknown {kind} {name!r}{hint}"


def components(kind: str | None = None) -> list[Component]:
    load_catalog()
    kinds = [kind] if kind else list(KINDS)
    return [c for k in kinds for _, c in sorted(_TABLES[k].items())]

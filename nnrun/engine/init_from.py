"""`model.init_from`: start a new run from an earlier run's (or a file's) weights.

RUN_DIR and FILE.keras: the source model is loaded (safe_mode) and every layer of the new model
whose name and weight shapes match a source layer takes its weights; the rest (typically the
classifier head, when the class count differs) keep their fresh initialisation. FILE.weights.h5
holds no layer names, only Keras' own object paths, so it is loaded by path with shape checks
(`load_weights(skip_mismatch=True)`), and a layer counts as loaded when its weights changed.
Runs before any run directory exists: a source that loads nothing is a config error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnrun.errors import ConfigError, first_line

KEY = "model.init_from"


def resolve_source(spec: str, checkpoint: str) -> Path:
    """The weights file `spec` names: a run's checkpoint, the newest completed run of a directory
    of runs, or a .keras / .weights.h5 file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "run.json").is_file():
            runs = sorted((d for d in path.iterdir() if (d / "run.json").is_file() and _completed(d)),
                          key=lambda d: d.name)
            if not runs:
                raise ConfigError(f"{path} is neither a run directory nor a directory holding a completed run", KEY)
            path = runs[-1]
        file = path / "checkpoints" / f"{checkpoint}.keras"
        if not file.is_file():
            raise ConfigError(f"run {path} has no checkpoints/{checkpoint}.keras", KEY)
        return file
    if not path.is_file():
        raise ConfigError(f"not found: {spec}", KEY)
    if not (path.name.endswith(".keras") or path.name.endswith(".weights.h5")):
        raise ConfigError(f"{spec} is not a run directory, a .keras file or a .weights.h5 file", KEY)
    return path


def _completed(run: Path) -> bool:
    import json

    try:
        return json.loads((run / "run.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def weighted_layers(model, prefix: str = "") -> dict:
    """name -> layer for every layer holding weights; layers of nested models as "outer/inner"."""
    import keras

    found = {}
    for layer in model.layers:
        name = prefix + layer.name
        if isinstance(layer, keras.Model):
            found.update(weighted_layers(layer, name + "/"))
        elif layer.weights:
            found[name] = layer
    return found


def _shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]


def _source_classes(source: Path) -> list[str] | None:
    """Class names of the run a checkpoint belongs to (run.json "data"), when known."""
    import json

    try:
        record = json.loads((source.parent.parent / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return (record.get("data") or {}).get("class_names")


def initialise(model, spec: str, checkpoint: str = "best", class_names: list[str] | None = None) -> dict:
    """Load matching weights into `model`; the record run.json keeps (source, loaded, new layers).
    The classifier head is left new when the source run's classes are other classes (even as many)."""
    from nnrun.components.models.heads import HEAD_LAYERS

    source = resolve_source(spec, checkpoint)
    theirs = _source_classes(source) if source.name.endswith(".keras") else None
    keep_head = theirs is None or class_names is None or list(theirs) == list(class_names)
    skip = () if keep_head else HEAD_LAYERS
    if source.name.endswith(".weights.h5"):
        loaded, mismatched = _from_weights_file(model, source)
    else:
        loaded, mismatched = _from_model_file(model, source, skip)
    target = weighted_layers(model)
    if not loaded:
        detail = f"; shapes differ for {', '.join(mismatched[:5])}" if mismatched else ""
        raise ConfigError(f"no layer of {model.name!r} matches a layer of {source} by name and shape, so nothing "
                          f"would be loaded{detail}", KEY)
    record = {"source": str(source.resolve()), "loaded": loaded, "new": [n for n in target if n not in loaded],
              "shape_mismatch": mismatched}
    if not keep_head:
        record["head"] = f"new: the source was trained on other classes ({', '.join(theirs)})"
    return record


def _from_model_file(model, source: Path, skip=()) -> tuple[list[str], list[str]]:
    import keras

    from nnrun.components.custom_objects import load_all

    load_all()
    try:
        other = keras.saving.load_model(source, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"cannot load {source}: {first_line(exc)}", KEY) from None
    theirs = weighted_layers(other)
    loaded, mismatched = [], []
    for name, layer in weighted_layers(model).items():
        match = theirs.get(name)
        if match is None or name in skip:
            continue
        if _shapes(match) != _shapes(layer):
            mismatched.append(name)
            continue
        layer.set_weights(match.get_weights())
        loaded.append(name)
    return loaded, mismatched


def _from_weights_file(model, source: Path) -> tuple[list[str], list[str]]:
    import warnings

    layers = weighted_layers(model)
    before = {name: [np.array(w) for w in layer.get_weights()] for name, layer in layers.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns once per skipped layer; the record lists them
            model.load_weights(source, skip_mismatch=True)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        raise ConfigError(f"cannot load {source}: {first_line(exc)}", KEY) from None
    loaded = [name for name, layer in layers.items()
              if any(not np.array_equal(a, b) for a, b in zip(before[name], layer.get_weights()))]
    return loaded, []

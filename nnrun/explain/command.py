"""`nnrun explain`: load a run's checkpoint and data, explain N images, write maps and figures.

Everything that can be checked without TensorFlow (method, options, run directory, checkpoint
file, split, class index, a method that has no token version on a sequence run) is checked
first, so a bad request fails in well under a second. Token-sequence runs are explained per
token over the token embedding (tokens.py).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from nnrun import registry
from nnrun.errors import ConfigError, UsageError
from nnrun.explain import tokens
from nnrun.explain.base import outputs_of, validate_options


def parse_target(target: str) -> str | int:
    """'predicted', 'true' or a class index."""
    if target in ("predicted", "true"):
        return target
    try:
        return int(target)
    except ValueError:
        raise UsageError(f"--target must be predicted, true or a class index, got {target!r}") from None


def resolve_targets(spec: str | int, predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image target classes for a --target spec."""
    if spec == "predicted":
        return np.asarray(predicted, np.int32)
    if spec == "true":
        return np.asarray(labels, np.int32)
    if not 0 <= spec < num_classes:
        raise UsageError(f"--target {spec} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return np.full(len(predicted), spec, np.int32)


def explainer_component(method: str, options: dict):
    """The registered explainer and its validated params from the command-line options."""
    try:
        component = registry.get("explainer", method)
    except ConfigError as exc:
        raise UsageError(f"--method: {exc}") from None
    options = {k: v for k, v in options.items() if v is not None}
    fields = component.params.model_fields
    if "base_params" in fields:  # a wrapper (smoothgrad): options it does not take go to its base
        own = {k: v for k, v in options.items() if k in fields}
        own["base_params"] = {k: v for k, v in options.items() if k not in fields}
        options = own
    return component, validate_options(component, options)


def _clean(value):
    """JSON-safe: NaN -> null, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _class(index: int, names: list[str]) -> dict:
    return {"index": int(index), "name": names[index] if index < len(names) else str(index)}


def explain(run_dir: str | Path, method: str, *, layer: str | None = None, num_images: int = 16,
            split: str = "val", target: str = "predicted", steps: int | None = None, batch_size: int = 32,
            output: str | Path | None = None, baseline: str | None = None, samples: int | None = None,
            noise: float | None = None, base: str | None = None, sanity_check: bool = False,
            checkpoint: str = "best") -> dict:
    """Explain the first `num_images` images of `split`; returns the manifest (with its path)."""
    from nnrun.engine.build import build_data
    from nnrun.inference.open_run import open_run
    from nnrun.rundir import atomic_write

    component, params = explainer_component(
        method, {"layer": layer, "steps": steps, "baseline": baseline, "samples": samples, "noise": noise, "base": base})
    spec = parse_target(target)
    if num_images < 1 or batch_size < 1:
        raise UsageError("--num-images and --batch-size must be >= 1")
    opened = open_run(run_dir, checkpoint)
    run, cfg = opened.run, opened.cfg
    out = Path(output) if output else run.own_dir(Path("explain") / method)  # a linked folder: refused now
    from nnrun.engine import runtime

    if _imports_tensorflow(cfg):  # through the quiet path, as train and evaluate do
        runtime.import_tensorflow()
    data = build_data(cfg)
    if data.task != "classification":
        raise UsageError(f"explain needs a classification run; {cfg.data.dataset} is a {data.task} data set")
    part = data.split(split)
    n = min(num_images, len(part))
    x, labels = part.head(n)
    labels = labels.astype(np.int32)
    sequence = tokens.looks_like_tokens(x)
    if sequence:
        tokens.check_method(method, getattr(params, "base", None))
        if baseline is not None:
            raise UsageError("--baseline applies to images; on token sequences integrated gradients starts from "
                             "the padding embedding at every real position")
        x = x.astype(np.int32)
    else:
        x = x.astype(np.float32)  # any range: raw uint8 pixels or normalised floats
    pad_id = int(data.meta.get("pad_id", 0))
    if isinstance(spec, int):
        resolve_targets(spec, labels, labels, data.num_classes)  # range check before loading TensorFlow

    opened.setup_runtime()
    model = opened.load_model()
    masks = part.masks[:n] if part.masks is not None else None
    if not sequence:
        x, masks = _as_evaluated(opened, x, masks)
    probs = _softmax(outputs_of(model, x, batch_size))
    predicted = probs.argmax(axis=1)
    targets = resolve_targets(spec, predicted, labels, data.num_classes)

    start = time.perf_counter()
    explainer = component.builder(params, model)
    result = explainer.explain(x, targets, batch_size, pad_id=pad_id)
    seconds = time.perf_counter() - start
    real = result.real  # token runs: (N, T) True at real tokens

    per_image = {k: np.asarray(v, np.float64) for k, v in result.per_image.items()}
    summary: dict = {"accuracy": float(np.mean(predicted == labels))}
    if masks is not None:
        per_image.update(_mask_checks(result.heatmap, masks, summary))
    if "completeness_error" in per_image:
        errors = per_image["completeness_error"]
        summary["completeness_error_max"] = float(np.nanmax(errors)) if np.isfinite(errors).any() else None
        summary["completeness_error_mean"] = float(np.nanmean(errors)) if np.isfinite(errors).any() else None
        summary["completeness_abs_error_max"] = float(np.nanmax(per_image["completeness_abs_error"]))
        conditioned = per_image.pop("completeness_conditioned").astype(bool)
        kept = errors[conditioned & np.isfinite(errors)]
        summary["completeness_error_max_conditioned"] = float(kept.max()) if kept.size else None
        summary["completeness_ill_conditioned"] = int((~conditioned).sum())
    if sanity_check:
        per_image["sanity_rank_correlation"] = _sanity(component, params, model, x, targets, batch_size,
                                                       result.heatmap, cfg.seed, summary, pad_id, real)

    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)
    names = data.class_names
    vocabulary = list(data.meta.get("vocabulary") or [])
    images = []
    titles = []
    shown = []  # token runs: the real tokens' labels per example
    from nnrun.explain import render

    for i in range(n):
        stem = f"{split}_{i:05d}"
        title = (f"true {_class(labels[i], names)['name']} | pred {_class(predicted[i], names)['name']} "
                 f"({probs[i, predicted[i]]:.2f})")
        if targets[i] != predicted[i]:
            title += f"\ntarget {_class(targets[i], names)['name']} ({probs[i, targets[i]]:.2f})"
        titles.append(title)
        item = {"index": i, "heatmap": f"{stem}.npy", "overlay": f"{stem}.png"}
        if real is None:
            np.save(out / f"{stem}.npy", result.raw[i])
            render.overlay(out / f"{stem}.png", x[i], result.heatmap[i], title)
        else:  # per real token: padding excluded from the .npy, the figure and the manifest
            positions = np.flatnonzero(real[i])
            np.save(out / f"{stem}.npy", result.raw[i][positions])
            words = [_token(x[i, t], vocabulary) for t in positions]
            shown.append((words, result.heatmap[i][positions]))
            render.tokens(out / f"{stem}.png", words, result.heatmap[i][positions], title)
            item["num_tokens"] = int(len(positions))
            item["tokens"] = [{"position": int(t), "id": int(x[i, t]), "token": word,
                               "attribution": float(result.raw[i, t])} for t, word in zip(positions, words)]
        images.append({
            **item,
            "true": _class(labels[i], names), "predicted": _class(predicted[i], names),
            "probability": float(probs[i, predicted[i]]),
            "target": _class(targets[i], names), "target_probability": float(probs[i, targets[i]]),
            **{k: (bool(v[i]) if k == "pointing_hit" else float(v[i])) for k, v in per_image.items()},
        })
    suptitle = f"{method} - {run.path.name} [{split}]"
    if real is None:
        render.grid(out / "grid.png", x, result.heatmap, titles, suptitle)
    else:
        render.token_grid(out / "grid.png", shown, titles, suptitle)

    manifest = _clean({
        "method": method, "run": str(run.path), "checkpoint": checkpoint, "split": split, "num_images": n,
        "input": "tokens" if real is not None else "images",
        "target": spec, "params": _shown_params(params, real is not None), "explainer": explainer.info,
        "raw": explainer.raw_description,
        "batch_size": batch_size, "explain_time_s": round(seconds, 3), "summary": summary, "images": images,
        "grid": "grid.png",
    })
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    manifest["output"] = str(out)
    return manifest


def _as_evaluated(opened, x: np.ndarray, masks: np.ndarray | None):
    """The images (and object masks) as validation feeds them to the model: through the run's
    eval layers (random_resized_crop's centre crop, progressive resizing's eval_size), so the
    heatmaps explain the inputs the model is scored on, at that size."""
    import tensorflow as tf

    from nnrun.engine.pipeline import eval_inputs, eval_layers

    techniques = opened.eval_techniques()
    if not eval_layers(techniques):
        return x, masks
    x = eval_inputs(tf, tf.constant(x), techniques).numpy()
    if masks is not None:  # as a one-channel image, then thresholded again
        masks = eval_inputs(tf, tf.constant(masks[..., None], tf.float32), techniques).numpy()[..., 0] >= 0.5
    return x, masks


def _imports_tensorflow(cfg) -> bool:
    """Whether building this run's data imports TensorFlow (tfds always; other sources when they
    stream, `cache: file | none`), so it must be imported through runtime's quiet path first."""
    cache = (cfg.data.params or {}).get("cache", "memory")
    return cfg.data.dataset == "tfds" or cache in ("file", "none")


def _shown_params(params, sequence: bool) -> dict:
    """The explainer's params for the manifest; on token runs without the image-only IG baseline
    options (the baseline is the padding embedding, as `explainer.baseline` says)."""
    shown = params.model_dump()
    if sequence:
        for where in (shown, shown.get("base_params")):
            if isinstance(where, dict) and "baseline" in where:
                where["baseline"] = "padding"
                where.pop("blur_sigma", None)
    return shown


def _token(token_id, vocabulary: list) -> str:
    """A token's label: its vocabulary entry when the data set has one, else its id."""
    token_id = int(token_id)
    return str(vocabulary[token_id]) if 0 <= token_id < len(vocabulary) else str(token_id)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _mask_checks(heatmaps, masks, summary) -> dict:
    from nnrun.explain import checks

    hits = checks.pointing_hits(heatmaps, masks)
    energy = checks.energy_in_mask(heatmaps, masks)
    area = masks.reshape(len(masks), -1).mean(axis=1)
    summary.update({
        "pointing_game": float(hits.mean()),
        "pointing_tolerance_px": checks.tolerance(*heatmaps.shape[1:3]),
        "energy_in_mask": float(np.nanmean(energy)) if np.isfinite(energy).any() else None,
        "mask_area_fraction": float(area.mean()),
    })
    return {"pointing_hit": hits, "energy_in_mask": energy}


def _sanity(component, params, model, x, targets, batch_size, heatmaps, seed, summary, pad_id=0,
            real=None) -> np.ndarray:
    """Randomisation test: the same explainer on a re-initialised copy of the model (token runs:
    the magnitudes of the real tokens' attributions)."""
    from nnrun.explain import checks

    random_maps = component.builder(params, checks.randomised_model(model, seed)).explain(
        x, targets, batch_size, pad_id=pad_id).heatmap
    if real is None:
        rho = np.array([checks.spearman(a, b) for a, b in zip(heatmaps, random_maps)])
    else:
        rho = np.array([checks.spearman(np.abs(a[r]), np.abs(b[r])) for a, b, r in zip(heatmaps, random_maps, real)])
    defined = np.isfinite(rho)
    summary.update({
        "sanity_rank_correlation": float(np.mean(rho[defined])) if defined.any() else None,
        "sanity_rank_correlation_max": float(np.max(rho[defined])) if defined.any() else None,
        "sanity_undefined": int((~defined).sum()),  # a constant map has no ranking to correlate
    })
    return rho


def _remove_previous(out: Path) -> None:
    """Delete the files an earlier manifest in `out` listed (never anything else)."""
    try:
        old = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return
    for item in old.get("images", []):
        for key in ("heatmap", "overlay"):
            name = str(item.get(key, ""))
            if name and "/" not in name and "\\" not in name and not name.startswith("."):
                (out / name).unlink(missing_ok=True)

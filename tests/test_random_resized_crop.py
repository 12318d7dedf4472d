"""random_resized_crop and image_folder's storage_size: torchvision's draw, the crop resized as
a bilinear resize with aligned corners would, the centre-crop eval layers (in exports too), stored images that keep
the aspect ratio in every cache mode and predict, and exact resume after a kill mid-epoch."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


def _tf():
    import tensorflow as tf

    return tf


def _torchvision_areas(height, width, n, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop areas (fractions) of torchvision's RandomResizedCrop.get_params, in numpy."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        for _ in range(10):
            target = height * width * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                out.append(h * w / (height * width))
                break
        else:
            out.append(min(height, round(width / ratio[0])) * min(width, round(height * ratio[1])) / (height * width))
    return np.array(out)


def test_crops_follow_torchvisions_draw_and_are_a_pure_function_of_the_key():
    from nnrun.components.techniques.random_resized_crop import crop_boxes

    tf = _tf()
    key = tf.constant([3, 4], tf.int64)
    top, left, h, w = (v.numpy() for v in crop_boxes(tf, key, 4000, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3)))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    area, ratio = h * w / (40 * 60), w / h
    reference = _torchvision_areas(40, 60, 20000)  # the rejection of big draws shifts the mean
    assert 0.06 <= area.min() and abs(area.mean() - reference.mean()) < 0.02
    assert abs(np.median(area) - np.median(reference)) < 0.03
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4
    assert len(set(zip(top, left, h, w))) > 3000  # per example, not per batch
    again = [v.numpy() for v in crop_boxes(tf, key, 4000, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3))]
    np.testing.assert_array_equal(again[0], top)
    other = crop_boxes(tf, tf.constant([3, 5], tf.int64), 4000, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3))[0].numpy()
    assert (other != top).mean() > 0.5
    # a scale no draw can fit (a 10x area) falls back to the centre crop, ratio clamped
    top, left, h, w = (v.numpy() for v in crop_boxes(tf, key, 8, 20, 60, (1.0, 1.0), (1.0, 2.0)))
    assert (h == 20).all() and (w == 40).all() and (left == 10).all() and (top == 0).all()


def test_each_crop_is_resized_from_its_own_pixels_with_the_corners_aligned():
    from nnrun.components.techniques.random_resized_crop import resize_crops

    tf = _tf()
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (3, 30, 24, 3)), tf.float32)
    top, left, h, w = [5, 0, 2], [3, 0, 10], [11, 30, 25], [17, 24, 9]
    out = resize_crops(tf, images, tf.constant(top), tf.constant(left), tf.constant(h), tf.constant(w), 14).numpy()
    for i in range(3):
        crop = images[i, top[i]:top[i] + h[i], left[i]:left[i] + w[i]]
        expected = tf.compat.v1.image.resize_bilinear(crop[None], [14, 14], align_corners=True)[0].numpy()
        np.testing.assert_allclose(out[i], expected, atol=2e-3, err_msg=str(i))


def _technique(stored, size, crop_pct=0.875, **extra):
    from nnrun import registry
    from nnrun.components.techniques.base import TechniqueContext

    component = registry.get("technique", "random_resized_crop")
    ctx = TechniqueContext(epochs=2, batch_size=4, steps_per_epoch=3, image_size=size, label_mode="onehot",
                           stored_size=stored if stored != size else None)
    return component.builder(component.params.model_validate({"crop_pct": crop_pct, **extra}), ctx)


def test_eval_layers_take_the_centre_crop_pct_and_resize_it_antialiased():
    from nnrun.engine.pipeline import eval_inputs

    tf = _tf()
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3)).astype(np.uint8)
    out = eval_inputs(tf, tf.constant(images), [_technique(40, 16, crop_pct=0.85)]).numpy()
    side = round(40 * 0.85)  # 34, offset 3
    expected = tf.image.resize(images[:, 3:37, 3:37].astype(np.float32), [16, 16], antialias=True).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-3)
    assert side == 34
    # stored at 256 for 224 with crop_pct 0.875: the centre 224 as it is (timm's eval transform)
    assert [layer.name for layer in _technique(256, 224).eval_layers()] == ["eval_centre_crop"]
    assert _technique(32, 32, crop_pct=1.0).eval_layers() == []


def test_with_progressive_resizing_the_crop_is_that_epochs_size_and_resized_once():
    from nnrun import registry
    from nnrun.components.techniques.base import TechniqueContext

    tf = _tf()
    ctx = TechniqueContext(epochs=2, batch_size=4, steps_per_epoch=3, image_size=24, label_mode="onehot",
                           stored_size=32)
    techniques = []
    for name, params in (("progressive_resizing", {"sizes": [12, 24], "epochs": [1, 1]}), ("random_resized_crop", {})):
        component = registry.get("technique", name)
        ctx.techniques[name] = component.builder(component.params.model_validate(params), ctx)
        techniques.append(ctx.techniques[name])
    images, labels = tf.zeros([4, 32, 32, 3]), tf.zeros([4, 2])
    for epoch, size in ((0, 12), (1, 24)):
        x = images
        for t in sorted(techniques, key=lambda t: t.priority):
            x, _ = t.batch_transform(x, labels, tf.constant(epoch, tf.int64), tf.constant([1, epoch], tf.int64))
        assert tuple(x.shape) == (4, size, size, 3)


def _photo_folder(root: Path, per_class: int = 24) -> Path:
    """Two classes of non-square images (portrait and landscape) with a colour split, so
    where the crop falls matters."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, count in (("train", per_class), ("val", per_class // 3)):
        for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / part / "ab"[label]
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = (int(v) for v in rng.integers(20, 48, 2))
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                pixels[: h // 3] = 255 - pixels[: h // 3]
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}", quality=90)
    return root


def test_storage_size_keeps_the_aspect_ratio_and_the_centre_square_in_every_mode_and_predict(tmp_path, monkeypatch):
    from PIL import Image

    from nnrun import registry
    from nnrun.components.data import image_folder
    from nnrun.components.data.decode import MAX_PIXELS
    from nnrun.components.data.graph_decode import decode_one
    from nnrun.inference.predict import Rows, batches
    from nnrun.inference.open_run import DataFacts

    tf = _tf()
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    root = _photo_folder(tmp_path / "imgs", per_class=6)
    png = next((root / "train" / "a").glob("*.png"))
    full = np.asarray(Image.open(png).convert("RGB"), np.float32)
    h, w = full.shape[:2]
    short = min(h, w)
    new_h, new_w = max(20, round(h * 20 / short)), max(20, round(w * 20 / short))
    resized = tf.image.resize(full, [new_h, new_w], antialias=True).numpy()
    top, left = (new_h - 20) // 2, (new_w - 20) // 2
    expected = np.clip(np.round(resized[top:top + 20, left:left + 20]), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decode_one(png, 20, 3, MAX_PIXELS, keep_aspect=True), expected)

    built = {cache: image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16, storage_size=20,
                                                                      cache=cache))
             for cache in ("memory", "file", "none")}
    memory = built["memory"]
    assert built["file"].split("train").whole is not None  # the file cache holds whole images to train on
    assert memory.input_shape == (20, 20, 3) and memory.train_size == 16 and memory.describe()["train_size"] == 16
    held = memory.split("train").held  # the training images at their own sizes (stored_images.py)
    assert memory.split("train").x is None and held.channels == 3 and held.side == 20
    sides = [Image.open(f).size[::-1] for f in image_folder.image_files(root / "train")]  # (height, width)
    assert sorted(map(tuple, held.shapes)) == sorted(  # short side 20, the long one rounded half up
        tuple(max(20, (40 * side + min(hw)) // (2 * min(hw))) for side in hw) for hw in sides)
    assert any(h != w for h, w in held.shapes)  # not squares
    assert memory.split("val").x.shape[1:] == (20, 20, 3)  # evaluation: the centre squares
    x = [a for a, _ in held.read().as_numpy_iterator()]  # read as their centre squares
    for cache in ("file", "none"):
        streamed = sorted(np.asarray(a).tobytes() for a, _ in built[cache].split("train").stream().as_numpy_iterator())
        assert streamed == sorted(a.tobytes() for a in x), cache
    # Statistics (normalize: train, random_erasing's mean) come from the same centre squares.
    normed = {cache: image_folder.build(image_folder.ImageFolderParams(
        path=str(root), image_size=16, storage_size=20, cache=cache, normalize="train")) for cache in ("memory", "none")}
    np.testing.assert_allclose(normed["memory"].preprocess["mean"], normed["none"].preprocess["mean"], rtol=1e-6)
    np.testing.assert_allclose(normed["memory"].preprocess["std"], normed["none"].preprocess["std"], rtol=1e-6)
    erasing = registry.get("technique", "random_erasing")
    technique = erasing.builder(erasing.params.model_validate({"value": "mean"}), _technique(20, 16).ctx)
    technique.check(memory)
    np.testing.assert_allclose(technique.mean, np.mean(x, axis=(0, 1, 2)), rtol=1e-6)
    files = image_folder.image_files(root / "train")
    facts = DataFacts(["a", "b"], 2, (20, 20, 3), "uint8", None, train_size=16)
    rows = Rows([str(f) for f in files], [None] * len(files), paths=[str(f) for f in files])
    predicted = [a for xs, _ in batches(rows, facts, batch_size=8) for a in xs.numpy()]
    assert sorted(a.tobytes() for a in predicted) == sorted(a.tobytes() for a in x)


def _config(tmp_path: Path, root: Path, cache: str, techniques: str, name: str = "rrc") -> Path:
    extra = ", shuffle_buffer: 64" if cache == "file" else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: {name}
seed: 3
data:
  dataset: image_folder
  params: {{path: {root}, image_size: 16, storage_size: 24, cache: {cache}{extra}}}
  batch_size: 8
model: {{name: resnet, params: {{stages: [8], blocks_per_stage: 1}}}}
optimizer: {{name: adam, learning_rate: 0.01}}
train:
  epochs: 3
  backup_every_steps: 2
  techniques: {techniques}
runtime: {{runs_root: {tmp_path / 'runs'}, deterministic: true}}
""")
    return path


def test_storage_size_without_a_cropping_technique_is_refused_in_one_line(tmp_path):
    root = _photo_folder(tmp_path / "imgs", per_class=6)
    res = run_cli("train", str(_config(tmp_path, root, "memory", "{}")))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "data.params.storage_size" in res.stderr and "random_resized_crop" in res.stderr
    assert not (tmp_path / "runs").exists()
    bad = run_cli("validate", str(_config(tmp_path, root, "memory", "{random_resized_crop: {}}")), "--set",
                  "data.params.storage_size=12")
    assert bad.returncode == 2 and "storage_size (12) must be at least image_size (16)" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["memory", "none"])
def test_random_resized_crop_resumes_bit_identically_after_a_kill_mid_epoch(tmp_path, cache):
    from tests.test_reliability import assert_identical, position, start_and_stop

    root = _photo_folder(tmp_path / "imgs")
    config = _config(tmp_path, root, cache, "{random_resized_crop: {scale: [0.3, 1.0]}, augment: {flip: horizontal}}")
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    reference = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((reference / "run.json").read_text())
    assert record["techniques"]["random_resized_crop"]["eval_crop"] == 21  # round(24 * 0.875)
    assert record["final_metrics"]["val_accuracy"] >= 0.8

    def mid_epoch(run):
        where = position(run)
        return where is not None and where["epoch"] == 1 and where["step"] == 2

    run, proc = start_and_stop(config, tmp_path / "runs" / "rrc", mid_epoch)
    assert proc.returncode == -signal.SIGKILL and (position(run)["epoch"], position(run)["step"]) == (1, 2)
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert_identical(reference, run)
    if cache == "memory":  # the export carries the centre crop: it takes the stored 24 px images
        res = run_cli("export", str(reference), "--format", "keras")
        assert res.returncode == 0, res.stderr
        manifest = json.loads((reference / "exported" / "export.json").read_text())
        entry = manifest["keras"]
        assert entry["inputs"]["shape"] == [None, 24, 24, 3]
        assert entry["inputs"]["eval_layers"] == ["eval_centre_crop", "eval_crop_resize"]
        # explain sees what validation sees: the 21 px centre crop resized to 16, not the stored 24 px
        res = run_cli("explain", str(reference), "--method", "gradcam", "--num-images", "2")
        assert res.returncode == 0, res.stderr
        assert np.load(reference / "explain" / "gradcam" / "val_00000.npy").shape == (16, 16)
    assert math.isfinite(record["final_metrics"]["val_loss"])


@pytest.mark.parametrize("channels", [3, 1])
def test_a_streamed_crop_is_decoded_from_the_whole_file_by_every_route(tmp_path, monkeypatch, channels):
    """cache: none decodes each file straight into its crop (decode_and_crop_jpeg for JPEGs, at
    the file's DCT scale): the box drawn in the whole decoded image, the pixels every mode
    decodes, then resized with antialiasing. Exact for every other route; a JPEG crop decoded
    alone differs from a slice of the full decode only where libjpeg upsamples chroma at its
    edges. A file that fails to decode gives its reason and a blank crop."""
    from PIL import Image

    from nnrun.components.data import graph_decode
    from nnrun.components.data.decode import MAX_PIXELS, decode_full
    from nnrun.components.data.graph_decode import _luma, decode_dataset, inspect_files
    from nnrun.components.data.routes import JPEG1, JPEG8, PILLOW
    from tests.test_decode import write_bad_pixels_png, write_kinds

    tf = _tf()
    paths = [str(p) for p in write_kinds(tmp_path / "kinds").values()]
    big = np.random.default_rng(2).integers(0, 256, (30, 40, 3)).repeat(10, 0).repeat(10, 1).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=92)  # 300 x 400: decoded at 1/8 for 16 px
    write_bad_pixels_png(tmp_path / "bad.png")
    paths += [str(tmp_path / "big.jpg"), str(tmp_path / "bad.png")]
    routes, sizes = inspect_files(paths, 16, MAX_PIXELS)
    assert JPEG8 in routes and {JPEG1, 0}.issubset(set(routes.tolist()))
    crop = _technique(16, 12, scale=(0.1, 0.6)).example_crop(tf.constant(2, tf.int64), tf.constant([5, 6], tf.int64))
    order = np.random.default_rng(0).permutation(len(paths))
    through_pillow = []  # a TensorFlow route that failed would be read by Pillow instead: none may

    def pillow(path, *args):
        through_pillow.append(path)
        return decode_full(path, *args)

    monkeypatch.setattr(graph_decode, "decode_full", pillow)
    out = list(decode_dataset(paths, routes, 16, channels, MAX_PIXELS, order=tf.constant(order), crop=crop,
                              sizes=sizes).as_numpy_iterator())
    boxes = np.stack([v.numpy() for v in crop.boxes(sizes[:, 0], sizes[:, 1])], axis=1)
    assert len(out) == len(paths)
    assert sorted(through_pillow) == sorted([p for p, r in zip(paths, routes) if r == PILLOW] + [paths[-1]])
    for (image, error), i in zip(out, order):
        assert image.shape == (12, 12, channels) and image.dtype == np.uint8, paths[i]
        if paths[i].endswith("bad.png"):
            assert error.startswith(b"broken data") and not image.any()
            continue
        assert error == b""
        full = decode_full(paths[i], 16)
        full = np.repeat(full, 3, -1) if full.shape[-1] == 1 else full
        assert tuple(sizes[i]) == full.shape[:2], paths[i]  # the size listed is the decoded one
        top, left, h, w = boxes[i]
        assert h < full.shape[0] or w < full.shape[1], paths[i]  # a real crop
        part = tf.constant(full[top:top + h, left:left + w])
        part = _luma(tf, part) if channels == 1 else part
        expected = np.clip(np.round(tf.image.resize(part, [12, 12], antialias=True).numpy()), 0, 255).astype(np.uint8)
        difference = np.abs(image.astype(int) - expected)
        if JPEG1 <= routes[i] <= JPEG8:
            assert difference.mean() < 2.5, paths[i]
        else:
            assert difference.max() == 0, paths[i]


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_random_resized_crop_per_example_is_keyed_on_seed_epoch_and_example(tmp_path, cache):
    """Streamed, the crop is fused into the decode; in memory, taken from each image held at its
    own size. Either way the batch crop is not run and a resume replays the same crops."""
    from nnrun.components.data import image_folder
    from nnrun.components.techniques.random_resized_crop import RandomResizedCrop
    from nnrun.engine import pipeline

    root = _photo_folder(tmp_path / "imgs", per_class=12)
    split = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16, storage_size=24,
                                                              cache=cache)).split("train")
    assert split.decode is not None and split.shuffle_buffer == 0

    def batches(technique, **kw):
        args = dict(batch_size=8, seed=3, num_classes=2, label_mode="sparse", first_epoch=0, last_epoch=2)
        return [(x.numpy(), y.numpy()) for x, y in pipeline.train_dataset(split, **{**args, **kw},
                                                                          techniques=[technique])]

    technique = _technique(24, 16)
    with pytest.MonkeyPatch.context() as patch:  # the batch crop is not run (nor run twice)
        patch.setattr(RandomResizedCrop, "batch_transform", lambda *a: pytest.fail("batch crop used"))
        full = batches(technique)
        assert len(full) == 6 and all(x.shape == (8, 16, 16, 3) for x, _ in full)
        for (a, la), (b, lb) in zip(batches(technique, first_epoch=1, skip_steps=1), full[4:]):  # a resume
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
        assert sorted(np.concatenate([y for _, y in full[:3]]).tolist()) == sorted(split.y.tolist())
        assert [y.tolist() for _, y in full[:3]] != [y.tolist() for _, y in full[3:]]  # a new order each epoch
        other = batches(technique, seed=4)
        assert not np.array_equal(np.sort(full[0][0].reshape(8, -1), 0), np.sort(other[0][0].reshape(8, -1), 0))
        # the same file is cropped differently in another epoch: its images differ between epochs
        epoch = [{(int(y), x.tobytes()) for x, y in zip(*batch)} for batch in full]
        assert not set().union(*epoch[:3]) & set().union(*epoch[3:])


def test_explain_takes_images_and_masks_through_the_eval_layers():
    """Heatmaps explain what validation feeds the model: the centre crop of the stored image,
    resized; the object masks that score them are cropped and resized with it."""
    from types import SimpleNamespace

    from nnrun.explain.command import _as_evaluated

    tf = _tf()
    x = np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 3)).astype(np.float32)
    masks = np.zeros((2, 40, 40), bool)
    masks[0, :4, :4] = True  # outside the centre 34 px: cropped away
    masks[1, 10:30, 10:30] = True  # inside: the centre 20 px of the 34, at 16/34 scale
    opened = SimpleNamespace(eval_techniques=lambda: [_technique(40, 16, crop_pct=0.85)])
    seen, cut = _as_evaluated(opened, x, masks)
    expected = tf.image.resize(x[:, 3:37, 3:37], [16, 16], antialias=True).numpy()
    np.testing.assert_allclose(seen, expected, atol=1e-3)
    assert cut.shape == (2, 16, 16) and cut.dtype == bool
    assert not cut[0].any() and 60 <= cut[1].sum() <= 110 and cut[1, 8, 8] and not cut[1, 0, 0]
    plain = SimpleNamespace(eval_techniques=lambda: [])
    same, kept = _as_evaluated(plain, x, masks)
    assert same is x and kept is masks


def test_a_streamed_crop_follows_progressive_resizing(tmp_path):
    from nnrun import registry
    from nnrun.components.data import image_folder
    from nnrun.components.techniques.base import TechniqueContext
    from nnrun.engine import pipeline

    root = _photo_folder(tmp_path / "imgs", per_class=4)
    split = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16, storage_size=24,
                                                              cache="none")).split("train")
    ctx = TechniqueContext(epochs=2, batch_size=4, steps_per_epoch=2, image_size=16, label_mode="onehot",
                           stored_size=24)
    for name, params in (("progressive_resizing", {"sizes": [8, 16], "epochs": [1, 1]}), ("random_resized_crop", {})):
        component = registry.get("technique", name)
        ctx.techniques[name] = component.builder(component.params.model_validate(params), ctx)
    batches = pipeline.train_dataset(split, batch_size=4, seed=0, num_classes=2, label_mode="onehot", first_epoch=0,
                                     last_epoch=2, techniques=list(ctx.techniques.values()))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 8, 8, 3)] * 2 + [(4, 16, 16, 3)] * 2


@pytest.mark.parametrize("cache", ["memory", "none", "file"])
def test_training_crops_come_from_the_whole_image_not_its_centre_square(tmp_path, monkeypatch, cache):
    """Wide images, red | green | blue in thirds: their centre square is all green, so a crop
    wider than it must show red or blue (with scale >= 0.5 every crop is wider). Evaluation
    still sees the centre square. A resumed epoch replays the same crops."""
    from PIL import Image

    from nnrun.components.data import image_folder
    from nnrun.engine import pipeline

    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))

    for part, count in (("train", 8), ("val", 2)):
        for label in "ab":
            (tmp_path / part / label).mkdir(parents=True)
            for i in range(count):
                pixels = np.zeros((20, 60, 3), np.uint8)
                for third in range(3):
                    pixels[:, 20 * third:20 * third + 20, third] = 255
                Image.fromarray(pixels).save(tmp_path / part / label / f"{i}.png")
    data = image_folder.build(image_folder.ImageFolderParams(path=str(tmp_path), image_size=16, storage_size=20,
                                                             cache=cache))
    technique = _technique(20, 16, scale=(0.5, 1.0))
    args = dict(batch_size=8, seed=0, num_classes=2, label_mode="sparse", last_epoch=2, techniques=[technique])
    batches = [x.numpy() for x, _ in pipeline.train_dataset(data.split("train"), first_epoch=0, **args)]
    resumed = [x.numpy() for x, _ in pipeline.train_dataset(data.split("train"), first_epoch=1, skip_steps=1, **args)]
    assert len(batches) == 4 and len(resumed) == 1 and np.array_equal(resumed[0], batches[3])
    crops = np.concatenate(batches)
    assert crops.shape == (32, 16, 16, 3)
    red_or_blue = (crops[..., 0] > 128) | (crops[..., 2] > 128)
    assert red_or_blue.any(axis=(1, 2)).all()
    val = np.concatenate([x for x, _ in pipeline.eval_dataset(data.split("val"), batch_size=4, num_classes=2,
                                                               label_mode="sparse", techniques=[technique])])
    assert val.shape == (4, 16, 16, 3) and (val[..., 1] > 250).all() and (val[..., [0, 2]] < 5).all()

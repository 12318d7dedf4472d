"""decode.py and graph_decode.py: one image decoder for every cache mode of image_folder (and
predict).

Every kind of file a user's folder holds (8/16-bit, gray, alpha, palette, CMYK, EXIF-rotated,
WebP, camera MPO) gives sensible pixels, and the same pixels with cache: memory, file and none;
the files TensorFlow decodes give exactly the pixels Pillow's route gives them.
"""

from __future__ import annotations

import faulthandler
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnrun.components.data import image_folder
from nnrun.components.data.decode import MAX_PIXELS, UnreadableImage, check_file
from nnrun.components.data.graph_decode import decode_dataset, decode_one
from nnrun.components.data.routes import PILLOW, ROUTE_NAMES
from nnrun.errors import ConfigError


def decode_file(path, image_size, channels: int, route: int | None = None) -> np.ndarray:
    return decode_one(path, image_size, channels, MAX_PIXELS, route)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): unfiltered rows, deflated."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def write_bad_pixels_png(path: Path) -> None:
    """A PNG whose chunks and checksums are all valid but whose pixel data is not deflate data:
    it passes the up-front check (no inflating) and fails when decoded."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", b"not deflate data") + _chunk(b"IEND", b""))


def _marked(colour, size=(20, 24), channels=3, dtype=np.uint8, mark=0) -> np.ndarray:
    """A flat colour with a dark corner square, so resizing has something to do."""
    h, w = size
    a = np.empty((h, w, channels), dtype)
    a[:] = colour
    a[:6, :6] = mark
    return a if channels > 1 else a[..., 0]


# name -> (writer, the colour the file's centre decodes to (RGB), tolerance)
def _kinds() -> dict:
    def save(array, mode=None, fmt=None, **kw):
        return lambda path: Image.fromarray(array, mode).save(path, fmt, **kw)

    def palette(transparent: bool):
        def write(path):
            img = Image.fromarray((_marked(1, channels=1) > 0).astype(np.uint8), "L").convert("P")
            img.putpalette([250, 250, 0, 10, 120, 220] + [0] * 762)
            img.save(path, **({"transparency": 1} if transparent else {}))
        return write

    def cmyk(path):
        Image.fromarray(_marked((30, 160, 90))).convert("CMYK").save(path, "JPEG", quality=95)

    def exif_rotated(path):  # stored 16 high x 32 wide: left half red, right half blue
        a = np.zeros((16, 32, 3), np.uint8)
        a[:, :16] = (220, 20, 20)
        a[:, 16:] = (20, 20, 220)
        exif = Image.Exif()
        exif[0x0112] = 6  # display turned 90 degrees clockwise: the left half ends up on top
        Image.fromarray(a).save(path, "JPEG", quality=95, exif=exif)

    def mpo(path):
        first = Image.fromarray(_marked((60, 180, 120)))
        first.save(path, "MPO", quality=95, save_all=True, append_images=[Image.fromarray(_marked((0, 0, 0)))])

    return {
        "rgb8.png": (save(_marked((200, 40, 40))), (200, 40, 40), 0),
        "rgb16.png": (lambda p: write_png16_rgb(p, _marked(np.array((40, 200, 40)) * 257, dtype=np.uint16)),
                      (40, 200, 40), 0),
        "gray16.png": (save(_marked(128 * 257, channels=1, dtype=np.uint16)), (128, 128, 128), 0),
        "gray8.png": (save(_marked(90, channels=1)), (90, 90, 90), 0),
        "rgba.png": (save(np.dstack([_marked((40, 40, 200)), np.full((20, 24), 128, np.uint8)])), (40, 40, 200), 0),
        "palette.png": (palette(False), (10, 120, 220), 0),
        "palette_transparent.png": (palette(True), (10, 120, 220), 0),  # alpha dropped: the palette colour
        "cmyk.jpg": (cmyk, (30, 160, 90), 12),
        "exif.jpg": (exif_rotated, None, 0),
        "lossy.webp": (save(_marked((120, 60, 180)), quality=95), (120, 60, 180), 8),
        "camera.jpg": (mpo, (60, 180, 120), 6),
        "photo.jpg": (save(_marked((180, 120, 60)), quality=95), (180, 120, 60), 6),
    }


def write_kinds(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (write, _, _) in _kinds().items():
        write(folder / name)
        paths[name] = folder / name
    return paths


def test_every_kind_decodes_to_sensible_pixels(tmp_path):
    paths = write_kinds(tmp_path)
    assert Image.open(paths["gray16.png"]).mode == "I;16" and Image.open(paths["camera.jpg"]).format == "MPO"
    assert Image.open(paths["cmyk.jpg"]).mode == "CMYK" and Image.open(paths["palette_transparent.png"]).info
    for name, (_, colour, tol) in _kinds().items():
        x = decode_file(paths[name], 16, 3)
        assert x.shape == (16, 16, 3) and x.dtype == np.uint8, name
        if colour is not None:
            np.testing.assert_allclose(x[12, 12], colour, atol=tol, err_msg=name)  # 16-bit is not white
            assert np.abs(x[0, 0].astype(int) - colour).max() > 60, name  # the corner mark survives the resize
        gray = decode_file(paths[name], 16, 1)
        assert gray.shape == (16, 16, 1), name
        if colour is not None:  # ITU-R 601-2 luma
            assert abs(int(gray[12, 12, 0]) - np.dot(colour, (0.299, 0.587, 0.114))) <= tol + 1, name


def test_bit_depth_rules(tmp_path):
    ramp = np.array([[0, 128, 257, 32767, 32768, 32896, 65279, 65535]], np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    got = decode_file(tmp_path / "ramp.png", (1, 8), 1)[0, :, 0]
    np.testing.assert_array_equal(got, np.round(ramp[0] / 257))  # round(v / 257)
    np.testing.assert_array_equal(got, [0, 0, 1, 127, 128, 128, 254, 255])
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F").save(tmp_path / "unit.tiff")
    np.testing.assert_array_equal(decode_file(tmp_path / "unit.tiff", (1, 3), 1)[0, :, 0], [0, 128, 255])
    Image.fromarray(np.array([[0.0, 100.0, 300.0]], np.float32), "F").save(tmp_path / "wide.tiff")
    np.testing.assert_array_equal(decode_file(tmp_path / "wide.tiff", (1, 3), 1)[0, :, 0], [0, 100, 255])
    Image.fromarray(np.array([[0, 32896, 70000]], np.int32), "I").save(tmp_path / "int.tiff")
    np.testing.assert_array_equal(decode_file(tmp_path / "int.tiff", (1, 3), 1)[0, :, 0], [0, 128, 255])


def test_exif_orientation_is_applied(tmp_path):
    paths = write_kinds(tmp_path)
    x = decode_file(paths["exif.jpg"], 16, 3).astype(int)
    assert x[2, 8, 0] > 180 and x[2, 8, 2] < 60  # top: the stored left half (red)
    assert x[13, 8, 2] > 180 and x[13, 8, 0] < 60  # bottom: the stored right half (blue)
    tall = decode_file(paths["exif.jpg"], (20, 10), 3).astype(int)  # (height, width), as displayed
    assert tall.shape == (20, 10, 3) and tall[2, 5, 0] > 180 and tall[17, 5, 2] > 180


def test_unreadable_files_give_short_reasons(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    write_bad_pixels_png(tmp_path / "pixels.png")
    cases = {"notes.txt": "not an image (cannot identify image file)", "cut.jpg": "truncated file",
             "cut.png": "truncated file", "missing.png": "file not found"}
    for name, why in cases.items():
        for check in (lambda f: decode_file(f, 8, 3), check_file):
            with pytest.raises(UnreadableImage) as err:
                check(tmp_path / name)
            assert str(err.value) == why
    check_file(tmp_path / "pixels.png")  # checksums fine: only decoding finds it
    with pytest.raises(UnreadableImage, match="broken data stream"):
        decode_file(tmp_path / "pixels.png", 8, 3)


EXPECTED_ROUTES = {"rgb8.png": "png", "gray8.png": "png", "rgba.png": "png", "palette.png": "png",
                   "photo.jpg": "jpeg", "lossy.webp": "webp", "plain.gif": "gif", "plain.bmp": "bmp",
                   "big.jpg": "jpeg/4", "rgb16.png": "pillow", "gray16.png": "pillow",
                   "palette_transparent.png": "pillow", "cmyk.jpg": "pillow", "exif.jpg": "pillow",
                   "camera.jpg": "pillow"}


def test_tensorflow_routes_give_exactly_pillows_pixels(tmp_path):
    """Each file's route is picked from its header; a file TensorFlow decodes gives the very
    pixels it gets through Pillow (INTEGER_ACCURATE is Pillow's DCT, the same DCT scale as its
    draft, the same luma), in RGB and in one channel."""
    paths = write_kinds(tmp_path)
    Image.fromarray(_marked((30, 90, 200))).convert("P").save(tmp_path / "plain.gif")
    Image.fromarray(_marked((200, 90, 30))).save(tmp_path / "plain.bmp")
    rng = np.random.default_rng(0)  # a photo-sized JPEG: decoded at 1/4 scale for 32 px
    photo = np.clip(np.linspace(0, 255, 480)[None, :, None] + rng.normal(0, 30, (360, 480, 3)), 0, 255)
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "big.jpg", quality=90)
    paths.update({n: tmp_path / n for n in ("plain.gif", "plain.bmp", "big.jpg")})
    assert {n: ROUTE_NAMES[check_file(p, 32)] for n, p in paths.items()} == EXPECTED_ROUTES
    for name, path in paths.items():
        for channels in (3, 1):
            got = decode_file(path, 32, channels)
            np.testing.assert_array_equal(got, decode_file(path, 32, channels, route=PILLOW), err_msg=name)


def test_the_pipeline_yields_one_image_or_reason_per_file_in_order(tmp_path):
    """In parallel, in order, never raising: a file only TensorFlow's decoder refuses (pixels.png
    passes the header check) comes back with Pillow's reason, in its place."""
    import tensorflow as tf

    paths = write_kinds(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    write_bad_pixels_png(tmp_path / "pixels.png")
    names = ["pixels.png", *paths, "notes.txt", "pixels.png"]
    routes = [check_file(tmp_path / n) if n != "notes.txt" else PILLOW for n in names]
    ds = decode_dataset([str(tmp_path / n) for n in names], routes, 12, 3, MAX_PIXELS)
    assert ds.element_spec[0].shape == (12, 12, 3) and ds.element_spec[0].dtype == tf.uint8
    out = list(ds.as_numpy_iterator())
    assert len(out) == len(names)
    for name, (image, error) in zip(names, out):
        if name == "notes.txt":
            assert error == b"not an image (cannot identify image file)" and not image.any()
        elif name == "pixels.png":
            assert error.startswith(b"broken data stream") and not image.any()
        else:
            assert error == b""
            np.testing.assert_array_equal(image, decode_file(tmp_path / name, 12, 3), err_msg=name)


def _folder(root: Path) -> Path:
    """train/a: every kind; train/b and val/: a few of them again under other names."""
    paths = write_kinds(root / "train" / "a")
    for i, name in enumerate(["rgb16.png", "gray16.png", "cmyk.jpg", "exif.jpg"]):
        for part, folder in (("train", "b"), ("val", "a"), ("val", "b")):
            if part == "val" and i > 1:
                continue
            (root / part / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(paths[name], root / part / folder / f"copy{i}-{name}")
    return root


def _raw(split) -> list:
    """(label, pixel bytes) of each example of a split, sorted: in memory or streamed alike,
    whatever dtype the split hands over (the model rescales)."""
    if split.x is not None:
        pairs = zip(np.asarray(split.x), split.y)
    else:
        pairs = split.stream().as_numpy_iterator()
    return sorted((int(y), np.asarray(x).astype(np.uint8).tobytes()) for x, y in pairs)


@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
def test_every_cache_mode_gives_the_same_pixels(tmp_path, monkeypatch, color_mode):
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    root = _folder(tmp_path / "imgs")
    built = {cache: image_folder.build(image_folder.ImageFolderParams(
        path=str(root), image_size=12, color_mode=color_mode, cache=cache)) for cache in ("memory", "file", "none")}
    channels = 3 if color_mode == "rgb" else 1
    for split in ("train", "val"):
        memory = _raw(built["memory"].split(split))
        assert len(memory) == (len(_kinds()) + 4 if split == "train" else 4)
        assert all(len(x) == 12 * 12 * channels for _, x in memory)
        assert _raw(built["file"].split(split)) == memory, split
        assert _raw(built["none"].split(split)) == memory, split
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the file cache was written (train, val)


def test_predict_decodes_a_runs_files_to_the_pixels_training_saw(tmp_path):
    """nnrun predict's input pipeline and image_folder (cache: memory) give the same bytes."""
    from types import SimpleNamespace

    from nnrun.inference.predict import Rows, batches

    root = _folder(tmp_path / "imgs")
    data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=12))
    files = image_folder.image_files(root / "train")
    facts = SimpleNamespace(input_shape=(12, 12, 3), input_dtype="uint8", preprocess=None, train_size=None)
    predicted = [x for xs, _ in batches(Rows([str(f) for f in files], [None] * len(files), paths=[str(f) for f in files]),
                                        facts, batch_size=8) for x in xs.numpy()]
    assert sorted(x.tobytes() for x in predicted) == sorted(x.tobytes() for x in data.split("train").x)


def test_skip_notice_gives_the_reason(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / "b" / "cut.jpg").write_bytes((root / "train" / "a" / "photo.jpg").read_bytes()[:200])
    with pytest.raises(ConfigError, match=r"2 file\(s\) are not readable images: .*notes.txt \(not an image"):
        image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8))
    data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8, skip_invalid=True))
    assert len(data.split("train")) == len(_kinds()) + 4
    err = capsys.readouterr().err
    assert f"image_folder: skipped {root / 'train' / 'a' / 'notes.txt'}: not an image (cannot identify image file)" \
        in err
    assert f"image_folder: skipped {root / 'train' / 'b' / 'cut.jpg'}: truncated file" in err


def test_a_file_that_only_fails_when_decoded_is_named_in_every_mode(tmp_path, capfd):
    """pixels.png passes the up-front check. The file cache write names it (Dataset.save would
    deadlock on a pipeline error: the write must record failures instead) and keeps no cache, or
    skips it; cache: none stops with its name, or (skip_invalid) uses a blank image in its place."""
    import tensorflow as tf

    root = _folder(tmp_path / "imgs")
    write_bad_pixels_png(root / "train" / "b" / "pixels.png")
    cache = tmp_path / "cache"
    faulthandler.dump_traceback_later(300, exit=True)  # a deadlocked cache write must not hang the suite
    try:
        with pytest.raises(ConfigError, match=r"1 file\(s\) are not readable images: .*pixels.png \(broken data"):
            image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8, cache="file",
                                                              cache_dir=str(cache)))
        assert not cache.exists() or not any(cache.iterdir())  # no cache holding a blank for it
        data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8, cache="file",
                                                                 cache_dir=str(cache), skip_invalid=True))
        assert len(data.split("train")) == len(_kinds()) + 4
        assert len(list(data.split("train").stream())) == len(_kinds()) + 4
        assert "image_folder: skipped" in capfd.readouterr().err

        strict = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8, cache="none"))
        assert len(strict.split("train")) == len(_kinds()) + 5  # the check cannot see it
        with pytest.raises(tf.errors.InvalidArgumentError, match="image_folder: cannot decode .*pixels.png"):
            list(strict.split("train").stream())
        assert f"image_folder: cannot decode {root / 'train' / 'b' / 'pixels.png'}: broken data" \
            in capfd.readouterr().err
        lenient = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8, cache="none",
                                                                    skip_invalid=True))
        images = [x for x, _ in lenient.split("train").stream().as_numpy_iterator()]
        assert len(images) == len(_kinds()) + 5 and sum(not x.any() for x in images) == 1
        assert "a blank image stands in for it" in capfd.readouterr().err
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("gap_batch", [2, 3, 64])
def test_files_tensorflow_refuses_are_read_again_in_their_place_in_any_order(tmp_path, monkeypatch, gap_batch):
    """The decoder checks for missing files a batch of GAP_BATCH at a time: refused files at the
    start, in a row, across batches and at the end each come back in their place, as Pillow's
    reason and a blank, in the order asked for."""
    from nnrun.components.data import graph_decode

    monkeypatch.setattr(graph_decode, "GAP_BATCH", gap_batch)
    paths = []
    for i, bad in enumerate([True, False, True, True, False, False, True, False, True]):
        path = tmp_path / f"{i}.png"
        if bad:
            write_bad_pixels_png(path)
        else:
            Image.fromarray(np.full((6, 6, 3), 20 * i, np.uint8)).save(path)
        paths.append(str(path))
    routes, _ = graph_decode.inspect_files(paths, 4, MAX_PIXELS)
    for order in (None, [8, 0, 5, 2, 3, 7, 1, 6, 4]):
        out = list(graph_decode.decode_dataset(paths, routes, 4, 3, MAX_PIXELS,
                                               order=None if order is None else np.array(order)).as_numpy_iterator())
        expected = range(len(paths)) if order is None else order
        assert len(out) == len(paths)
        for (image, error), i in zip(out, expected):
            if i in (0, 2, 3, 6, 8):
                assert error.startswith(b"broken data") and not image.any(), i
            else:
                assert error == b"" and (image == 20 * i).all(), i

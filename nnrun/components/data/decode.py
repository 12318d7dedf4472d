"""One image decoder for every path that reads image files: image_folder in each cache mode
(`memory` decodes in Python, `file`/`none` in tf.data through `tf_decoder`) and `nnrun predict`.
The same file therefore gives the same uint8 pixels wherever it is read.

The rules (Pillow does all the decoding; TensorFlow only calls it from tf.data):

- Open with Pillow; the first frame of animated or multi-picture files (GIF, WebP, camera MPO).
- Large JPEGs are decoded at a reduced DCT scale (Pillow's `draft`, as `Image.thumbnail` does),
  never below twice the target size, then resized like every other image.
- Memory is bounded per image: a file that would decode to more than `max_pixels` pixels
  (JPEGs counted at their reduced scale) is refused from its header, before any pixel is
  decoded. This budget replaces Pillow's decompression-bomb check (which warns at 89.5 Mpx and
  fails at 179 Mpx whatever the budget). Deep images are converted to 8 bits in strips of rows
  (STRIP_ROWS), so a decode needs the decoded image plus about 1 byte per pixel, whatever the
  bit depth (whole-image int64 / float64 copies took about 20 bytes per pixel).
- Bit depth: 8-bit modes as they are. Integer images deeper than 8 bits (Pillow modes I;16*,
  and I, which Pillow uses for 16-bit PGM/TIFF and 32-bit integer TIFF) are read as 16-bit
  values: clipped to 0..65535, then round(v / 257), so 0 -> 0, 32768 -> 128, 65535 -> 255.
  16-bit colour PNGs are reduced to 8 bits by Pillow itself, which keeps the high byte
  (v >> 8): at most one level from round(v / 257), and exact for 8-bit data stored in 16 bits.
  Float images (mode F) whose finite values all lie in [0, 1] are scaled by 255, otherwise they
  are read on Pillow's own 0..255 scale; then clipped and rounded (NaN and inf become 0).
- Colour: palette, CMYK (Adobe-inverted CMYK JPEGs included), YCbCr, LAB, HSV and RGBX become
  RGB; bilevel and gray+alpha become L. `channels=1` takes RGB to L with ITU-R 601-2 luma
  (0.299 R + 0.587 G + 0.114 B, as Pillow and tf.image.rgb_to_grayscale); `channels=3`
  repeats L into three equal channels.
- Alpha is dropped (RGBA -> RGB, LA -> L, palette transparency too): the colour stored under a
  transparent pixel is kept, as keras.utils.load_img, torchvision and tf.io.decode_image do.
- Resize to (height, width) with Pillow's BILINEAR filter (antialiased when shrinking), on the
  8-bit L or RGB image.
- EXIF orientation is applied (the ImageOps.exif_transpose table), after the resize: a flip or
  quarter turn commutes with the resize, and turning the small image is cheaper. The resize
  target is swapped for quarter turns. An unreadable EXIF block is ignored (no rotation).

Any failure raises UnreadableImage, whose message is a short reason for a person to read.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

RESAMPLE = Image.Resampling.BILINEAR
MAX_PIXELS = 89_478_485  # default pixel budget per image: Pillow's own MAX_IMAGE_PIXELS
STRIP_ROWS = 256  # rows of a deep image converted at a time
Image.MAX_IMAGE_PIXELS = None  # the budget is ours (max_pixels), checked before decoding
_COLOUR = {"P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"}
_GRAY = {"1", "L", "LA"}
_DEEP = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}  # scaled to 8 bits in numpy
SUPPORTED_MODES = _COLOUR | _GRAY | _DEEP
# ImageOps.exif_transpose's table: EXIF orientation -> the transpose that displays the image upright.
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


class UnreadableImage(Exception):
    """A file that is not a decodable image; str() is a short reason, e.g. "truncated file"."""


def decode_file(path, image_size: int | tuple[int, int], channels: int,
                max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image in `path` as uint8 (height, width, channels) (see the module docstring for the
    rules); `image_size` is one int for square images or (height, width). Raises UnreadableImage,
    also for an image above `max_pixels`."""
    height, width = _size(image_size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    try:
        with Image.open(path) as img:
            box = _draft(img, height, width)
            _check_budget(img, max_pixels)
            img.load()  # before getexif, which may load (PNG) and would swallow a decoding error
            turn = _TRANSPOSE.get(_orientation(img))
            if turn in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                        Image.Transpose.ROTATE_270):
                height, width = width, height  # resized before the quarter turn
            eight = _eight_bit(img, channels)
            small = eight.resize((width, height), RESAMPLE, box=box)
            if turn is not None:
                small = small.transpose(turn)
            pixels = np.asarray(small, dtype=np.uint8)
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a user's file becomes one reason
        raise UnreadableImage(reason(exc)) from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return pixels


def _draft(img: Image.Image, height: int, width: int):
    """Set a JPEG's reduced DCT scale for this target size (img.size becomes the decoded size);
    the crop box the resize must use, or None."""
    if img.format not in ("JPEG", "MPO"):
        return None
    side = 2 * max(height, width)  # square: the same whichever way the image is turned
    drafted = img.draft(None, (side, side))
    return drafted[1] if drafted else None


def _check_budget(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise UnreadableImage(f"{width}x{height} is {width * height:,} pixels, above the budget of "
                              f"{max_pixels:,} (data.params.max_pixels)")


def check_file(path, image_size: int | tuple[int, int] = 8, max_pixels: int = MAX_PIXELS) -> None:
    """An up-front check, much cheaper than decoding for the usual formats: the header is read
    and its mode supported; a PNG's chunks are all present with correct CRCs (Pillow's verify,
    no inflating); a JPEG ends with its end-of-image marker (a truncated download does not).
    Anything else (other formats, a JPEG with trailing bytes) is decoded. Raises UnreadableImage."""
    try:
        with Image.open(path) as img:
            if img.mode not in SUPPORTED_MODES:
                raise UnreadableImage(f"unsupported mode {img.mode}")
            _draft(img, *_size(image_size))
            _check_budget(img, max_pixels)
            fmt = img.format
            if fmt == "PNG":
                img.verify()
                return
        if fmt in ("JPEG", "MPO") and _ends_with_eoi(path):
            return
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UnreadableImage(reason(exc)) from None
    decode_file(path, 8, 3, max_pixels)


def tf_decoder(image_size: int | tuple[int, int], channels: int, max_pixels: int = MAX_PIXELS):
    """A function for `tf.data.Dataset.map`: scalar string path -> (uint8 image [height, width,
    channels], error string), decoded by `decode_file` through tf.numpy_function. The error is
    b"" on success, else the UnreadableImage reason (the image is zeros then). Pillow releases
    the GIL while decoding and resizing, so `num_parallel_calls` runs files in parallel."""
    import tensorflow as tf

    height, width = _size(image_size)
    blank = np.zeros((height, width, channels), np.uint8)

    def decode_py(path):
        try:
            return decode_file(os.fsdecode(path), image_size, channels, max_pixels), np.bytes_(b"")
        except UnreadableImage as exc:
            return blank, np.bytes_(str(exc).encode())

    def decode(path):
        image, error = tf.numpy_function(decode_py, [path], [tf.uint8, tf.string], stateful=False,
                                         name="decode_image_file")
        image.set_shape([height, width, channels])
        error.set_shape([])
        return image, error

    return decode


def tf_batch_decoder(image_size: int | tuple[int, int], channels: int, max_pixels: int = MAX_PIXELS):
    """`tf_decoder` for a batch of paths (string [N]) -> (uint8 [N, height, width, channels],
    errors [N]): one Python call decodes N files, which is several times faster than one call
    per small file (the per-call overhead of tf.numpy_function dominates a 64 px JPEG)."""
    import tensorflow as tf

    height, width = _size(image_size)

    def decode_py(paths):
        images = np.zeros((len(paths), height, width, channels), np.uint8)
        errors = []
        for i, path in enumerate(paths):
            try:
                images[i] = decode_file(os.fsdecode(path), image_size, channels, max_pixels)
                errors.append(b"")
            except UnreadableImage as exc:
                errors.append(str(exc).encode())
        return images, np.array(errors, dtype=np.bytes_) if errors else np.zeros([0], np.bytes_)

    def decode(paths):
        images, errors = tf.numpy_function(decode_py, [paths], [tf.uint8, tf.string], stateful=False,
                                           name="decode_image_files")
        images.set_shape([None, height, width, channels])
        errors.set_shape([None])
        return images, errors

    return decode


def reason(exc: BaseException) -> str:
    """A short, human reason for a failure to open or decode an image file."""
    text = " ".join(str(exc).split())
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (cannot identify image file)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large for Pillow's decompression-bomb limit ({text})"
    if "truncated" in text.lower():
        return "truncated file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text or f"cannot decode ({type(exc).__name__})"


def _size(image_size) -> tuple[int, int]:
    """(height, width) from one int or a (height, width) pair."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good image unreadable
        return 1


def _eight_bit(img: Image.Image, channels: int) -> Image.Image:
    """`img` as an 8-bit L (gray sources, or channels=1) or RGB image (see the module docstring)."""
    mode = img.mode
    if mode in _DEEP:
        return _deep_to_l(img)
    if mode in _GRAY:
        return img if mode == "L" else img.convert("L")
    if mode not in _COLOUR:
        raise UnreadableImage(f"unsupported mode {mode}")
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # Pillow's own path for palette transparency; alpha dropped next
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img.convert("L") if channels == 1 else img


def _strips(img: Image.Image):
    """The image's pixels as numpy arrays of STRIP_ROWS rows each (each a copy of one strip)."""
    width, height = img.size
    for top in range(0, height, STRIP_ROWS):
        yield top, np.asarray(img.crop((0, top, width, min(height, top + STRIP_ROWS))))


def _deep_to_l(img: Image.Image) -> Image.Image:
    """A deep image (I;16*, I, F) as 8-bit L, converted a strip at a time (module docstring)."""
    width, height = img.size
    scale = 1.0
    if img.mode == "F":  # scaled by 255 when every value (NaN and inf read as 0) lies in [0, 1]
        low, high = np.inf, -np.inf
        for _, a in _strips(img):
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
            if a.size:
                low, high = min(low, float(a.min())), max(high, float(a.max()))
        scale = 255.0 if low >= 0 and high <= 1 else 1.0
    out = np.empty((height, width), np.uint8)
    for top, a in _strips(img):
        out[top:top + len(a)] = _deep_to_uint8(a, scale)
    return Image.fromarray(out, "L")


def _deep_to_uint8(a: np.ndarray, scale: float = 1.0) -> np.ndarray:
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) * scale
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    v = np.clip(a.astype(np.int64), 0, 65535)
    return ((v + 128) // 257).astype(np.uint8)  # round(v / 257): 257 is odd, so never a tie


def _ends_with_eoi(path) -> bool:
    """Whether a JPEG file's last bytes hold its end-of-image marker (FF D9)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 2))
        return f.read(2) == b"\xff\xd9"


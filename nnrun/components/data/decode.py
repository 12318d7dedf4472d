"""Pillow's side of the image decoder (graph_decode.py runs it, with TensorFlow's own decoders
for the ordinary files), the up-front file check that also picks a file's route, and the
reasons a file is unreadable. The rules, which TensorFlow's routes follow exactly:

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
  RGB; bilevel and gray+alpha become L. The channels are chosen later (graph_decode.py): L
  repeated into three equal channels, or RGB to one with ITU-R 601-2 luma (0.299 R + 0.587 G +
  0.114 B) in Pillow's integer arithmetic.
- Alpha is dropped (RGBA -> RGB, LA -> L, palette transparency too): the colour stored under a
  transparent pixel is kept, as keras.utils.load_img, torchvision and tf.io.decode_image do.
- EXIF orientation is applied (the ImageOps.exif_transpose table). An unreadable EXIF block is
  ignored (no rotation).
- The result is the full-size (or DCT-reduced) 8-bit L or RGB image; graph_decode.py chooses
  the channels and resizes it in TensorFlow, for every route alike.

Any failure raises UnreadableImage, whose message is a short reason for a person to read.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from nnrun.components.data.routes import orientation, route_of

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


def decode_full(path, image_size: int | tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image in `path` as uint8 (height, width, 3), or (height, width, 1) for gray sources,
    at its own size (a large JPEG at the reduced DCT scale `image_size` allows), by the rules
    of the module docstring. Raises UnreadableImage, also for an image above `max_pixels`."""
    height, width = size_of(image_size)
    try:
        with Image.open(path) as img:
            _draft(img, height, width)
            _check_budget(img, max_pixels)
            img.load()  # before getexif, which may load (PNG) and would swallow a decoding error
            turn = _TRANSPOSE.get(orientation(img))
            eight = _eight_bit(img)
            if turn is not None:
                eight = eight.transpose(turn)
            pixels = np.asarray(eight, dtype=np.uint8)
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a user's file becomes one reason
        raise UnreadableImage(reason(exc)) from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


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


def check_file(path, image_size: int | tuple[int, int] = 8, max_pixels: int = MAX_PIXELS) -> int:
    """The file's route for graph_decode (which decoder reads it at `image_size`), after
    inspect_file's up-front check; raises UnreadableImage."""
    return inspect_file(path, image_size, max_pixels)[0]


def inspect_file(path, image_size: int | tuple[int, int] = 8, max_pixels: int = MAX_PIXELS) -> tuple[int, int, int]:
    """An up-front check, much cheaper than decoding for the usual formats: the header is read
    and its mode supported; a PNG's chunks are all present with correct CRCs (Pillow's verify,
    no inflating); a JPEG ends with its end-of-image marker (a truncated download does not).
    Anything else (other formats, a JPEG with trailing bytes) is decoded. Returns (route,
    height, width): the route, and the size of the image the decoder gives at `image_size`
    (a JPEG at its DCT scale, EXIF orientation applied), in which a crop drawn before the decode
    (random_resized_crop's, streamed) is placed. Raises UnreadableImage."""
    try:
        with Image.open(path) as img:
            if img.mode not in SUPPORTED_MODES:
                raise UnreadableImage(f"unsupported mode {img.mode}")
            full_width = img.size[0]
            _draft(img, *size_of(image_size))
            _check_budget(img, max_pixels)
            route = route_of(img, path, max(1, round(full_width / max(1, img.size[0]))))
            # A PNG's EXIF is looked at only when its header holds it (getexif would decode the
            # PNG to look further); a size that is still wrong only moves a crop (it is clamped).
            turned = (img.format != "PNG" or "exif" in img.info) and orientation(img) in (5, 6, 7, 8)
            width, height = img.size[::-1] if turned else img.size
            fmt = img.format
            if fmt == "PNG":
                img.verify()
                return route, height, width
        if fmt in ("JPEG", "MPO") and _ends_with_eoi(path):
            return route, height, width
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UnreadableImage(reason(exc)) from None
    decode_full(path, 8, max_pixels)
    return route, height, width


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


def size_of(image_size) -> tuple[int, int]:
    """(height, width) from one int or a (height, width) pair."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def _eight_bit(img: Image.Image) -> Image.Image:
    """`img` as an 8-bit L (gray sources) or RGB image (see the module docstring)."""
    mode = img.mode
    if mode in _DEEP:
        return _deep_to_l(img)
    if mode in _GRAY:
        return img if mode == "L" else img.convert("L")
    if mode not in _COLOUR:
        raise UnreadableImage(f"unsupported mode {mode}")
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # Pillow's own path for palette transparency; alpha dropped next
    return img if img.mode == "RGB" else img.convert("RGB")


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


"""Which decoder reads a file (graph_decode.py), from its header when the file list is built:
TensorFlow's kernels where they decode exactly what Pillow decodes, Pillow for the rest."""

from __future__ import annotations

import os

PILLOW, JPEG1, JPEG2, JPEG4, JPEG8, PNG, GIF, BMP, WEBP = range(9)
ROUTE_NAMES = ("pillow", "jpeg", "jpeg/2", "jpeg/4", "jpeg/8", "png", "gif", "bmp", "webp")
_JPEG_BY_SCALE = {1: JPEG1, 2: JPEG2, 4: JPEG4, 8: JPEG8}


def route_of(img, path, scale: int) -> int:
    """The route of a file opened by Pillow (header only; `scale`: the DCT scale its draft chose)."""
    fmt, mode, info = img.format, img.mode, img.info
    if fmt == "PNG":  # from the chunk list: Pillow's getexif would decode a PNG to look for EXIF
        depth, colour, chunks = _png_chunks(path)
        return PNG if depth == 8 and colour in (0, 2, 3, 6) and not {b"tRNS", b"eXIf"} & chunks else PILLOW
    if orientation(img) != 1:
        return PILLOW
    if fmt == "JPEG" and mode in ("L", "RGB") and scale in _JPEG_BY_SCALE:
        return _JPEG_BY_SCALE[scale]
    if fmt == "GIF" and mode in ("P", "L") and "transparency" not in info and getattr(img, "n_frames", 1) == 1:
        return GIF
    if fmt == "BMP" and mode == "RGB" and _bmp_plain(path):
        return BMP
    if fmt == "WEBP" and mode == "RGB" and getattr(img, "n_frames", 1) == 1:
        return WEBP
    return PILLOW


def _png_chunks(path) -> tuple[int, int, set]:
    """A PNG's bit depth, colour type and chunk types, read from the chunk headers (no pixels)."""
    chunks = set()
    with open(path, "rb") as f:
        head = f.read(33)
        if len(head) < 33:
            return 0, 0, chunks
        f.seek(8)
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            kind = header[4:]
            chunks.add(kind)
            if kind == b"IEND":
                break
            f.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)
    return head[24], head[25], chunks


def _bmp_plain(path) -> bool:
    """A BMP with 24 or 32 bits per pixel, uncompressed (BI_RGB)."""
    with open(path, "rb") as f:
        head = f.read(34)
    if len(head) < 34 or int.from_bytes(head[14:18], "little") < 40:
        return False
    return int.from_bytes(head[28:30], "little") in (24, 32) and int.from_bytes(head[30:34], "little") == 0


def orientation(img) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good image unreadable
        return 1

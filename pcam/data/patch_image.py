"""One patch image file read for prediction: checked, converted when lossless, or refused.

A patch is a 96x96 RGB image with 8 bits per channel. Two kinds of file are
converted to RGB without changing a pixel, and the caller is told which: RGBA
whose alpha is opaque everywhere, and 8-bit palette ("P") images without
transparent pixels. Everything else is refused with one `PCamError` that names
the file and says what to do: another size, greyscale, 16 bits per channel
(Pillow would silently drop the low byte of a 16-bit RGB file, so the header is
read for it), transparency (an alpha channel, or a transparent colour in an RGB
file), several frames (a multi-page TIFF, an animated PNG or GIF: which one is
the patch?), an EXIF orientation other than upright (the stored pixels are not
what a viewer shows), other modes (CMYK, YCbCr, ...), an unreadable file. Size,
mode and frames come from the header, before the pixels are decoded, so an
image of any size is refused by its size, never by Pillow's decompression-bomb
limit.
"""

import os
import threading

import numpy as np
from PIL import Image

from pcam.core.errors import PCamError
from pcam.data.names import shown
from pcam.data.spec import PATCH_SHAPE

CONVERTED_MODES = ("RGBA", "P")  # converted to RGB when no pixel is transparent
_GREY = ("1", "L", "LA", "La", "I", "F")
_TIFF_BITS_PER_SAMPLE = 258
_EXIF_ORIENTATION = 274
_FIX = "convert it to a 96x96 8-bit RGB image or move it out of INPUT, then rerun"


def read_patch_image(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Read one patch image as uint8 RGB.

    Args:
        path: the image file (.tif, .tiff, .png, .jpg, .jpeg; Pillow decides by
            content, not by suffix).

    Returns:
        `(image, converted_from)`: image is uint8 (96, 96, 3); converted_from is
        the file's mode when it was converted to RGB ("RGBA" or "P"), else None.

    Raises:
        PCamError: naming `path`, for a file that is not a 96x96 8-bit RGB
            patch (see the module docstring) or cannot be read as an image.
    """
    name = shown(path)
    try:
        with _open_header(path) as image:  # reads the header only
            _check_header(image, name)
            mode = image.mode
            image.load()  # decodes fully: a truncated file fails here
            if mode == "RGB":
                return np.asarray(image, dtype=np.uint8), None
            rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)  # P: its palette colours
    except PCamError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise PCamError(f"{name} cannot be read as an image ({error}): it is damaged or not an "
                        "image; replace it or move it out of INPUT, then rerun") from None
    clear = int(np.count_nonzero(rgba[..., 3] < 255))
    if clear:
        what = "an alpha channel" if mode == "RGBA" else "a palette with transparency"
        raise PCamError(f"{name} has {what} and {clear} of its {rgba.shape[0] * rgba.shape[1]} "
                        "pixels are not opaque, so the tissue under them is unknown; save it as "
                        "RGB without transparency or move it out of INPUT, then rerun")
    return np.ascontiguousarray(rgba[..., :3]), mode


def _check_header(image: Image.Image, name: str) -> None:
    """`PCamError` unless the header says 96x96 and RGB (or a convertible mode), 8 bits."""
    if image.size != (PATCH_SHAPE[1], PATCH_SHAPE[0]):  # Pillow: (width, height)
        width, height = image.size
        raise PCamError(f"{name} is {width}x{height} pixels, not 96x96: PCam patches are 96x96 "
                        "pixels at 10x; cut it into 96x96 patches or move it out of INPUT, "
                        "then rerun")
    mode = image.mode
    bits = _bits_per_channel(image)
    if mode in _GREY or mode.startswith("I;"):
        depth = f", {bits}-bit" if bits > 8 else ""
        raise PCamError(f"{name} is greyscale (mode {mode}{depth}), not RGB: H&E patches are "
                        f"colour images; {_FIX}")
    if bits > 8:
        raise PCamError(f"{name} has {bits} bits per channel, not 8: scale it to 8-bit RGB "
                        "(0-255; Pillow would drop the low byte without saying), or move it out "
                        "of INPUT, then rerun")
    if mode != "RGB" and mode not in CONVERTED_MODES:
        raise PCamError(f"{name} has mode {mode}, not RGB; {_FIX}")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise PCamError(f"{name} holds {frames} frames (pages or an animation), not one patch; "
                        "save each frame as its own file or move it out of INPUT, then rerun")
    if mode == "RGB" and "transparency" in image.info:
        raise PCamError(f"{name} is RGB with a transparent colour, so the tissue under those "
                        "pixels is unknown; save it as RGB without transparency or move it out "
                        "of INPUT, then rerun")
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (0, 1):
        raise PCamError(f"{name} has EXIF orientation {orientation} (shown rotated or mirrored, "
                        "stored otherwise), so which way is the patch is ambiguous; save its "
                        "pixels upright without the tag, or move it out of INPUT, then rerun")


_OPEN = threading.Lock()


def _open_header(path: str | os.PathLike) -> Image.Image:
    """`Image.open` without Pillow's decompression-bomb limit, which would refuse a very
    large image before the size check can say what is wrong with it (only the header
    is read; a patch is decoded only once it is known to be 96x96). The limit is
    lifted under a lock, so threads reading ahead cannot leave it lifted."""
    with _OPEN:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _bits_per_channel(image: Image.Image) -> int:
    """Bits per channel as the file stores them (Pillow reports 16-bit RGB as "RGB")."""
    tags = getattr(image, "tag_v2", None)  # TIFF: BitsPerSample
    if tags is not None and _TIFF_BITS_PER_SAMPLE in tags:
        value = tags[_TIFF_BITS_PER_SAMPLE]
        return int(max(value) if isinstance(value, tuple) else value)
    for tile in image.tile:  # PNG: the raw mode, e.g. "RGB;16B"
        raw = tile[3] if isinstance(tile[3], str) else (tile[3] or ("",))[0]
        if isinstance(raw, str) and (";16" in raw or ";32" in raw):
            return 16 if ";16" in raw else 32
    return 8

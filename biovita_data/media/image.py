"""Images: verify, refuse decompression bombs, RGB, short side <= size, JPEG.

An RGB JPEG without an EXIF rotation (nearly every camera or phone photo) goes through OpenCV:
decoded at libjpeg-turbo's DCT scale (1/2, 1/4 or 1/8) nearest above the stored size, resized,
encoded, one C call each: a quarter to a third less CPU than the same steps in Pillow, whose
resize is scalar code (benchmarks/images_vs_img2dataset.py). Every other photo (PNG, greyscale,
CMYK, rotated) and a JPEG OpenCV cannot decode go through Pillow, whose error then names the
fault.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import warnings
from types import ModuleType

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from biovita_data.core.cstderr import filtered_c_stderr
from biovita_data.media.fingerprint import image_fingerprint, packed
from biovita_data.media.records import ItemFailure, StoredFile

# Pillow's filter: area averaging (OpenCV's INTER_AREA, img2dataset's choice), each output pixel
# the mean of the input pixels it covers; antialiased at any factor, 2-3x cheaper than BICUBIC.
RESAMPLE = Image.Resampling.BOX
# OpenCV's, below a factor of 2 (after DCT scaling, every resize but of the largest photos):
# bilinear, each output pixel from the 2 x 2 input pixels around its centre, so every input
# pixel counts; INTER_AREA (area averaging) at 2 or more. Against a LANCZOS reference this
# stores photos as close as Pillow's BOX did (PSNR 46.3 dB vs 45.9), at a third of its CPU.
AREA_FROM = 2.0
_ORIENTATION = 0x0112
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error)
# libjpeg's warnings (damaged data it decodes anyway, as Pillow does): not shown
_LIBJPEG_WARNING = re.compile(rb"^(Corrupt JPEG data|Premature end of JPEG file|Warning: )")


def target_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """The stored size: the short side at most image_size, aspect kept, never upscaled."""
    short = min(width, height)
    if short <= image_size:
        return width, height
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


def store_image(
    data: bytes, image_size: int, quality: int, fingerprints: bool = False
) -> StoredFile:
    """The JPEG to store for one downloaded photo; ItemFailure when it cannot be. With
    `fingerprints`, its fingerprint (pixel hash, PDQ) from the pixels decoded here: of the
    photo as stored, or of the resized pixels before they are encoded."""
    with warnings.catch_warnings():
        # above MAX_IMAGE_PIXELS Pillow only warns; above twice that it raises: refuse both
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))  # the header only: format, mode, size, EXIF
            orientation = im.getexif().get(_ORIENTATION, 1)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ItemFailure("decompression_bomb", str(exc)) from None
        except _DECODE_ERRORS as exc:
            raise ItemFailure("undecodable", f"{type(exc).__name__}: {exc}") from None
    if im.format == "JPEG" and im.mode == "RGB" and orientation == 1:
        stored = _store_jpeg(data, im.size, image_size, quality, fingerprints)
        if stored is not None:
            return stored
    return _store_pillow(im, data, orientation, image_size, quality, fingerprints)


def _store_jpeg(
    data: bytes, size: tuple[int, int], image_size: int, quality: int, fingerprints: bool
) -> StoredFile | None:
    """An RGB JPEG through OpenCV; None when OpenCV cannot decode it (Pillow then says why)."""
    cv2, read_flags = opencv()
    width, height = size
    out_size = target_size(width, height, image_size)
    with filtered_c_stderr(_LIBJPEG_WARNING):
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), read_flags[dct_scale(size, out_size)])
    if pixels is None:
        return None
    if out_size == size:  # the original bytes, verified by the decode above
        stored, transcoded = data, False
    else:
        pixels = resized(pixels, out_size)
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            return None
        stored, transcoded = encoded.tobytes(), True
    print_ = packed(image_fingerprint, _rgb_pixels(pixels)) if fingerprints else None
    return StoredFile(
        stored,
        "jpg",
        transcoded=transcoded,
        width=out_size[0],
        height=out_size[1],
        fingerprint=print_,
    )


def dct_scale(size: tuple[int, int], out_size: tuple[int, int]) -> int:
    """The largest JPEG DCT scale-down (1, 2, 4 or 8) that still decodes at least out_size."""
    (width, height), (out_w, out_h) = size, out_size
    scale = 1
    while scale < 8 and width // (2 * scale) >= out_w and height // (2 * scale) >= out_h:
        scale *= 2
    return scale


def resized(bgr: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """OpenCV's resize to out_size: bilinear below a factor of AREA_FROM, else area averaging."""
    cv2, _ = opencv()
    factor = max(bgr.shape[1] / out_size[0], bgr.shape[0] / out_size[1])
    method = cv2.INTER_AREA if factor >= AREA_FROM else cv2.INTER_LINEAR
    return cv2.resize(bgr, out_size, interpolation=method)


def _store_pillow(
    im: Image.Image,
    data: bytes,
    orientation: int,
    image_size: int,
    quality: int,
    fingerprints: bool,
) -> StoredFile:
    """Any photo Pillow opens, through Pillow (rotated by its EXIF, transparency on white)."""
    width, height = im.size
    size = target_size(width, height, image_size)
    try:
        if im.format == "JPEG" and size != (width, height):
            im.draft("RGB", size)  # DCT-domain 1/2, 1/4, 1/8 scaling: still decodes all data
        im.load()
    except _DECODE_ERRORS as exc:
        raise ItemFailure("undecodable", f"{type(exc).__name__}: {exc}") from None
    if im.format == "JPEG" and im.mode == "RGB" and orientation == 1 and size == im.size:
        print_ = packed(image_fingerprint, im) if fingerprints else None
        return StoredFile(
            data, "jpg", transcoded=False, width=width, height=height, fingerprint=print_
        )
    try:
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
            size = target_size(im.width, im.height, image_size)
        im = _rgb(im)
        if im.size != size:
            im = im.resize(size, RESAMPLE)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=quality)
    except _DECODE_ERRORS as exc:
        raise ItemFailure("undecodable", f"{type(exc).__name__}: {exc}") from None
    print_ = packed(image_fingerprint, im) if fingerprints else None
    return StoredFile(
        out.getvalue(), "jpg", transcoded=True, width=im.width, height=im.height, fingerprint=print_
    )


@functools.cache
def opencv() -> tuple[ModuleType, dict[int, int]]:
    """OpenCV, imported on first use and on one thread (a worker process is one core's work),
    and its read flags by DCT scale (no EXIF rotation: only photos without one come here)."""
    import cv2

    cv2.setNumThreads(1)
    keep = cv2.IMREAD_IGNORE_ORIENTATION
    return cv2, {
        1: cv2.IMREAD_COLOR | keep,
        2: cv2.IMREAD_REDUCED_COLOR_2 | keep,
        4: cv2.IMREAD_REDUCED_COLOR_4 | keep,
        8: cv2.IMREAD_REDUCED_COLOR_8 | keep,
    }


def _rgb_pixels(bgr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR pixels in RGB order (for the fingerprint)."""
    cv2, _ = opencv()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _rgb(im: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white (not the black of a plain convert)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im if im.mode == "RGB" else im.convert("RGB")

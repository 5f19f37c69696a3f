"""Photo bytes as an image tower's input: decoding at a reduced scale, the transform's size."""

from __future__ import annotations

from typing import Any

from PIL import Image

from biovita_data.loader import decode_image


def load_image(data: bytes, size: int) -> Image.Image:
    """Photo bytes for a tower of input `size`: a JPEG decodes at a reduced DCT scale that stays
    >= 2 x size (a 512 px photo for a 32 px tower at 1/8), so the transform's own resize still
    works from at least twice the tower's input."""
    return decode_image(data, draft=2 * size)


def input_size(transform: Any) -> int:
    """The output size of an image transform (the tower's input), 224 when it cannot tell."""
    for t in getattr(transform, "transforms", []):
        size = getattr(t, "size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, tuple | list) and size:
            return int(max(size))
    return 224

"""Synthetic animal photos of the sample world, their iNaturalist size variants and broken files.

A photo is a cluttered natural background with one "animal": the family's shape filled with the
genus' base colour and overlaid with the species' pattern in its accent colour (a dark shade or pale
tint of the genus' hue: congeneric species share a palette). The scene is drawn
at a working resolution of at most ``WORK_SIDE`` px on the short side and upscaled, so even
3000 px photos render in a fraction of a second; everything is seeded, so the same arguments give
the same bytes.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from biovita_data.sample.taxonomy import LookParams

WORK_SIDE = 512  # the scene is drawn with at most this many px on its short side
SUPERSAMPLE = 2  # the animal's masks are drawn this much larger, then box-reduced (antialiasing)
# JPEG at quality 90; PNG at zlib level 1 (level 6 takes ~1 s for a noisy 2048 px photo).
SAVE_OPTIONS: dict[str, dict[str, int]] = {"JPEG": {"quality": 90}, "PNG": {"compress_level": 1}}
FORMATS = {"jpg": "JPEG", "png": "PNG"}

# iNaturalist photo size words -> long side in px ("square" is a 75 x 75 centre crop).
SQUARE_SIDE = 75
LONG_SIDES = {"small": 240, "medium": 500, "large": 1024}
SIZE_WORDS = ("square", *LONG_SIDES, "original")

# Natural colours of the background: foliage, soil, sand, sky, rock, bark, dry grass.
NATURE_RGB = (
    (60, 90, 40), (95, 120, 55), (40, 70, 35), (130, 150, 80), (110, 85, 60), (140, 115, 80),
    (85, 65, 45), (190, 175, 140), (150, 180, 210), (200, 215, 225), (120, 120, 115),
    (70, 55, 45), (170, 160, 100),
)  # fmt: skip
EYE_RGB = (20, 18, 16)

Point = tuple[float, float]


def _shape_outline(shape: str) -> list[Point]:
    """The family's body outline in unit coordinates (head towards +x, inside [-1, 1]^2)."""
    ts = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
    if shape == "ellipse":
        return [(math.cos(t), 0.55 * math.sin(t)) for t in ts]
    if shape == "teardrop":
        return [(math.cos(t), 1.05 * math.sin(t) * math.sin(t / 2.0)) for t in ts]
    if shape == "triangle":
        return [(1.0, 0.0), (-0.8, 0.85), (-0.8, -0.85)]
    if shape == "diamond":
        return [(1.0, 0.0), (0.0, 0.75), (-1.0, 0.0), (0.0, -0.75)]
    if shape == "rectangle":
        return [(1.0, 0.7), (-1.0, 0.7), (-1.0, -0.7), (1.0, -0.7)]
    if shape == "hexagon":
        return [(math.cos(k * math.pi / 3.0), math.sin(k * math.pi / 3.0)) for k in range(6)]
    if shape == "star":
        return [
            (r * math.cos(k * math.pi / 5.0), r * math.sin(k * math.pi / 5.0))
            for k, r in zip(range(10), (1.0, 0.45) * 5, strict=True)
        ]
    raise ValueError(f"unknown shape {shape!r}")


def _rotated_rect(centre: Point, half_u: float, half_v: float, angle: float) -> list[Point]:
    """The corners of a rectangle in unit coordinates, its u axis at ``angle`` radians."""
    (cx, cy), c, s = centre, math.cos(angle), math.sin(angle)
    return [
        (cx + du * c - dv * s, cy + du * s + dv * c)
        for du, dv in ((half_u, half_v), (-half_u, half_v), (-half_u, -half_v), (half_u, -half_v))
    ]


def _draw_pattern(
    draw: ImageDraw.ImageDraw, look: LookParams, to_px: Callable[[Point], Point], unit_px: float
) -> None:
    """Draw the species' pattern (255 = accent) in the body's frame; the body mask clips it."""
    n, a = look.pattern_count, math.radians(look.pattern_angle)
    c, s = math.cos(a), math.sin(a)
    if look.pattern in ("stripes", "bands"):
        period = 2.0 / n
        half_width = period * (0.14 if look.pattern == "stripes" else 0.25)
        for i in range(n):
            off = -1.0 + (i + 0.5) * period  # along the stripes' normal (-s, c)
            rect = _rotated_rect((-s * off, c * off), 2.0, half_width, a)
            draw.polygon([to_px(p) for p in rect], fill=255)
    elif look.pattern == "checks":
        cell = 2.0 / n
        for i in range(-n, n):
            for j in range(-n, n):
                if (i + j) % 2 == 0:
                    u, v = (i + 0.5) * cell, (j + 0.5) * cell
                    rect = _rotated_rect((u * c - v * s, u * s + v * c), cell / 2, cell / 2, a)
                    draw.polygon([to_px(p) for p in rect], fill=255)
    elif look.pattern == "spots":
        radius = 0.26 / math.sqrt(n) + 0.06
        for i in range(n):  # a golden-angle spiral turned by the pattern angle
            r, t = 0.6 * math.sqrt((i + 0.5) / n), a + i * 2.399963
            x, y = to_px((r * math.cos(t), 0.7 * r * math.sin(t)))
            rp = radius * unit_px
            draw.ellipse((x - rp, y - rp, x + rp, y + rp), fill=255)
    elif look.pattern == "rings":
        x, y = to_px((0.2 * c, 0.2 * s))
        spacing = 1.1 / n * unit_px
        for k in range(n - 1, -1, -1):  # from the outside in: a ring, then the gap inside it
            for r, fill in (((k + 1) * spacing, 255), ((k + 0.5) * spacing, 0)):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    else:
        raise ValueError(f"unknown pattern {look.pattern!r}")


def _background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A gradient between two natural colours with soft blobs and twigs/grass lines."""
    w, h = size
    short = min(w, h)
    top, bottom = (np.array(NATURE_RGB[i], np.float32) for i in rng.choice(len(NATURE_RGB), 2))
    a = rng.uniform(-0.6, 0.6) + math.pi / 2  # mostly top-to-bottom, like a horizon
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    grad = top + (bottom - top) * t[..., None]
    im = Image.fromarray(grad.astype(np.uint8), "RGB").convert("RGBA")

    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(6, 16))):
        rgb = np.clip(
            np.array(NATURE_RGB[rng.integers(len(NATURE_RGB))]) + rng.integers(-20, 21, 3), 0, 255
        )
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.05, 0.3, 2) * short
        draw.ellipse(
            (cx - rx, cy - ry, cx + rx, cy + ry), fill=(*map(int, rgb), int(rng.integers(60, 160)))
        )
    for _ in range(int(rng.integers(3, 12))):
        rgb = NATURE_RGB[int(rng.choice([0, 2, 4, 6, 11, 12]))]  # foliage, soil, bark, grass
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        length, angle = rng.uniform(0.1, 0.6) * short, rng.uniform(0, math.pi)
        x1, y1 = x0 + length * math.cos(angle), y0 + length * math.sin(angle)
        width = max(1, int(rng.uniform(0.004, 0.015) * short))
        draw.line((x0, y0, x1, y1), fill=(*rgb, int(rng.integers(120, 220))), width=width)
    im = Image.alpha_composite(im, layer).convert("RGB")
    return im.filter(ImageFilter.GaussianBlur(short * float(rng.uniform(0.004, 0.012))))


def _encode(im: Image.Image, pil_format: str) -> bytes:
    """Encode ``im`` in a PIL format; no timestamps are written, so the bytes are deterministic."""
    out = io.BytesIO()
    im.save(out, format=pil_format, **SAVE_OPTIONS.get(pil_format, {}))
    return out.getvalue()


def render_image(look: LookParams, *, width: int, height: int, fmt: str, seed: int) -> bytes:
    """Render a seeded photo of a species with ``look`` as JPEG ("jpg") or PNG ("png") bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; choose one of {sorted(FORMATS)}")
    rng = np.random.default_rng(seed)
    k = min(1.0, WORK_SIDE / min(width, height))
    ww, wh = max(1, round(width * k)), max(1, round(height * k))
    short = min(ww, wh)
    scene = _background((ww, wh), rng)

    # Placement: the body spans 40..68 % of the short side along its long axis.
    unit = short * float(rng.uniform(0.2, 0.34))  # px per unit coordinate at working size
    rot = math.radians(float(rng.uniform(-30.0, 30.0)))
    cx = ww / 2 + rng.uniform(-0.5, 0.5) * max(0.0, ww / 2 - 1.05 * unit)
    cy = wh / 2 + rng.uniform(-0.5, 0.5) * max(0.0, wh / 2 - 1.05 * unit)
    cr, sr, ss = math.cos(rot), math.sin(rot), SUPERSAMPLE

    def to_px(p: Point) -> Point:
        u, v = p
        return (ss * (cx + unit * (u * cr - v * sr)), ss * (cy + unit * (u * sr + v * cr)))

    big = (ww * ss, wh * ss)
    masks = {name: Image.new("L", big, 0) for name in ("body", "pattern", "eye")}
    ImageDraw.Draw(masks["body"]).polygon([to_px(p) for p in _shape_outline(look.shape)], fill=255)
    _draw_pattern(ImageDraw.Draw(masks["pattern"]), look, to_px, unit * ss)
    ex, ey = to_px((0.5, -0.1))
    er = 0.07 * unit * ss
    ImageDraw.Draw(masks["eye"]).ellipse((ex - er, ey - er, ex + er, ey + er), fill=255)
    body, pattern, eye = (m.reduce(ss) for m in masks.values())

    # A soft shadow under the body, then the body: base colour, accent pattern, eye.
    shadow = body.transform(
        body.size, Image.Transform.AFFINE, (1, 0, -0.03 * short, 0, 1, -0.05 * short)
    ).filter(ImageFilter.GaussianBlur(0.03 * short))
    scene = Image.composite(Image.new("RGB", scene.size), scene, shadow.point(lambda v: v * 2 // 5))
    animal = Image.composite(
        Image.new("RGB", scene.size, look.accent_rgb),
        Image.new("RGB", scene.size, look.base_rgb),
        pattern,
    )
    animal.paste(EYE_RGB, mask=eye)
    scene.paste(animal, mask=body)

    # Exposure and a little sensor noise.
    pixels = np.asarray(scene, np.float32) * float(rng.uniform(0.8, 1.2))
    pixels += rng.normal(0.0, 2.5, pixels.shape).astype(np.float32)
    scene = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if scene.size != (width, height):
        scene = scene.resize((width, height), Image.Resampling.BICUBIC)
    return _encode(scene, FORMATS[fmt])


def resize_for_size_word(data: bytes, size: str) -> bytes:
    """Give the iNaturalist ``size`` variant (square/small/medium/large/original) of a photo."""
    if size not in SIZE_WORDS:
        raise ValueError(f"unknown photo size word {size!r}; choose one of {list(SIZE_WORDS)}")
    if size == "original":
        return data
    im = Image.open(io.BytesIO(data))
    pil_format = str(im.format)
    w, h = im.size
    if size == "square":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side > SQUARE_SIDE:
            im = im.resize((SQUARE_SIDE, SQUARE_SIDE), Image.Resampling.LANCZOS)
        return _encode(im, pil_format)
    long_side = LONG_SIDES[size]
    if max(w, h) <= long_side:  # never upscale: the photo is already small enough
        return data
    k = long_side / max(w, h)
    new_size = (max(1, round(w * k)), max(1, round(h * k)))
    return _encode(im.resize(new_size, Image.Resampling.LANCZOS), pil_format)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def decompression_bomb_png() -> bytes:
    """A tiny PNG whose header declares 40000 x 40000 RGB, so PIL refuses it as a bomb."""
    side = 40_000
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8 bit RGB, no interlace
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 16, 9)  # only the first rows' data
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def truncated(data: bytes) -> bytes:
    """The first 55 % of ``data``, as left by an interrupted download."""
    return data[: len(data) * 55 // 100]

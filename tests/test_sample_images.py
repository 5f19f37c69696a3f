"""The sample world's synthetic photos: determinism, formats, size words, broken files, signal."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageFile

from biovita_data.sample.images import (
    decompression_bomb_png,
    render_image,
    resize_for_size_word,
    truncated,
)
from biovita_data.sample.taxonomy import PATTERNS, SHAPES, LookParams, generate_taxonomy

LOOK = LookParams("star", (200, 60, 140), "stripes", (30, 40, 120), 35.0, 4)
MAGENTA = (255, 0, 255)  # far from every natural background colour
CYAN = (0, 255, 255)
PIL_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def _rgb(data: bytes) -> np.ndarray:
    """The decoded picture as an int array (h, w, 3)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _magenta_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a (brightness-scaled) magenta: red and blue both well above green."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r - g > 100) & (b - g > 100)


def _cyan_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a (brightness-scaled) cyan: green and blue both well above red."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (g - r > 100) & (b - r > 100)


def _silhouette(shape: str, seed: int) -> np.ndarray:
    """The body mask of a plain magenta animal of ``shape`` on a 256 px photo."""
    look = LookParams(shape, MAGENTA, "stripes", MAGENTA, 0.0, 3)
    return _magenta_mask(_rgb(render_image(look, width=256, height=256, fmt="png", seed=seed)))


def _image(size: tuple[int, int], pil_format: str) -> bytes:
    """A plain picture of ``size`` encoded in ``pil_format``."""
    out = io.BytesIO()
    Image.new("RGB", size, (90, 120, 60)).save(out, format=pil_format)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_render_is_deterministic(fmt: str) -> None:
    first = render_image(LOOK, width=320, height=240, fmt=fmt, seed=7)
    assert render_image(LOOK, width=320, height=240, fmt=fmt, seed=7) == first
    assert render_image(LOOK, width=320, height=240, fmt=fmt, seed=8) != first


@pytest.mark.parametrize(
    ("width", "height", "fmt", "pil_format"),
    [(256, 256, "png", "PNG"), (640, 480, "jpg", "JPEG"), (300, 1024, "png", "PNG")],
)
def test_render_declared_size_and_format(
    width: int, height: int, fmt: str, pil_format: str
) -> None:
    im = Image.open(io.BytesIO(render_image(LOOK, width=width, height=height, fmt=fmt, seed=1)))
    assert (im.format, im.size, im.mode) == (pil_format, (width, height), "RGB")


def test_render_large_photo() -> None:
    im = Image.open(io.BytesIO(render_image(LOOK, width=2048, height=2048, fmt="jpg", seed=2)))
    im.load()
    assert im.size == (2048, 2048)


def test_render_unknown_format() -> None:
    with pytest.raises(ValueError, match="gif"):
        render_image(LOOK, width=256, height=256, fmt="gif", seed=0)


def test_every_species_of_a_world_renders() -> None:
    for sp in generate_taxonomy("tiny", seed=0).species:
        data = render_image(sp.look, width=256, height=192, fmt="jpg", seed=sp.index)
        assert Image.open(io.BytesIO(data)).size == (256, 192)


@pytest.mark.parametrize(("pil_format", "fmt"), [("JPEG", "jpg"), ("PNG", "png")])
def test_size_words_give_inaturalist_dimensions(pil_format: str, fmt: str) -> None:
    data = render_image(LOOK, width=1600, height=1200, fmt=fmt, seed=3)
    expected = {"square": (75, 75), "small": (240, 180), "medium": (500, 375), "large": (1024, 768)}
    for word, size in expected.items():
        im = Image.open(io.BytesIO(resize_for_size_word(data, word)))
        assert (im.format, im.size) == (pil_format, size), word
    assert resize_for_size_word(data, "original") == data


def test_size_words_never_upscale() -> None:
    data = _image((200, 150), "JPEG")
    for word in ("small", "medium", "large"):
        assert Image.open(io.BytesIO(resize_for_size_word(data, word))).size == (200, 150)
    square = Image.open(io.BytesIO(resize_for_size_word(_image((60, 50), "PNG"), "square")))
    assert (square.format, square.size) == ("PNG", (50, 50))


def test_unknown_size_word() -> None:
    with pytest.raises(ValueError, match="huge"):
        resize_for_size_word(_image((100, 100), "PNG"), "huge")


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIL_DEFAULT_MAX_PIXELS)
    data = decompression_bomb_png()
    assert len(data) < 100_000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data)).load()


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated_fails_to_load(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    data = render_image(LOOK, width=300, height=200, fmt=fmt, seed=4)
    cut = truncated(data)
    assert 0.5 < len(cut) / len(data) < 0.6
    assert data.startswith(cut)
    with pytest.raises(OSError):
        Image.open(io.BytesIO(cut)).load()


@pytest.mark.parametrize("seed", range(4))
def test_genus_colour_shows_at_model_resolution(seed: int) -> None:
    """Two genera (base colours) differ clearly in the centre of the 32 px thumbnail."""
    means = []
    for base in ((220, 40, 40), (40, 60, 220)):
        look = LookParams("hexagon", base, "bands", (20, 20, 20), 50.0, 3)
        im = Image.open(io.BytesIO(render_image(look, width=256, height=256, fmt="png", seed=seed)))
        thumb = np.asarray(im.resize((32, 32), Image.Resampling.BOX)).astype(float)
        means.append(thumb[12:20, 12:20].reshape(-1, 3).mean(axis=0))
    assert np.linalg.norm(means[0] - means[1]) > 40


@pytest.mark.parametrize("seed", range(2))
def test_family_shapes_give_different_silhouettes(seed: int) -> None:
    masks = {shape: _silhouette(shape, seed) for shape in SHAPES}
    for shape, mask in masks.items():  # the animal fills 35-70 % of the short side, in frame
        ys, xs = np.nonzero(mask)
        extent = max(xs.max() - xs.min(), ys.max() - ys.min()) / 256
        assert 0.3 < extent < 0.9, shape
        assert min(xs.min(), ys.min()) > 0, shape
        assert max(xs.max(), ys.max()) < 255, shape
    for a, b in itertools.combinations(SHAPES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.8, (a, b, iou)


@pytest.mark.parametrize(("pattern", "count"), list(itertools.product(PATTERNS, (2, 8))))
def test_species_pattern_covers_part_of_the_body(pattern: str, count: int) -> None:
    look = LookParams("ellipse", MAGENTA, pattern, CYAN, 37.0, count)
    rgb = _rgb(render_image(look, width=256, height=256, fmt="png", seed=5))
    base, accent = _magenta_mask(rgb).sum(), _cyan_mask(rgb).sum()
    assert 0.1 < accent / (base + accent) < 0.8

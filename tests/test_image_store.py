"""store_image's two paths: RGB JPEGs through OpenCV, every other photo through Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from biovita_data.media import image
from biovita_data.media.fingerprint import image_fingerprint, pdq_distance, unpack
from biovita_data.media.image import store_image
from biovita_data.media.records import ItemFailure
from biovita_data.sample.images import render_image
from biovita_data.sample.taxonomy import generate_taxonomy


def _photo(size: tuple[int, int], exif: bytes | None = None) -> bytes:
    """A JPEG (quality 90): red left, blue right, a green gradient, a little grain."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    red = np.where(x < w / 2, 220.0, 20.0)
    pixels = np.stack([red, 255 * y / h, 235 - red], -1)
    pixels += np.random.default_rng(3).normal(0, 4, pixels.shape)
    buf = io.BytesIO()
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    im.save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a - b) ** 2)))


def _reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A LANCZOS resize of the full decode: what a stored photo should look like."""
    full = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(full.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


@pytest.mark.parametrize(
    ("size", "image_size", "stored", "least_db"),
    [
        ((2048, 1365), 512, (768, 512), 35),  # DCT 1/2, then bilinear (factor 1.33)
        ((800, 600), 512, (683, 512), 35),  # no DCT scale fits: bilinear from the full decode
        ((640, 480), 16, (21, 16), 22),  # DCT 1/8 is still 3.75x too big: area averaging
        # (at 21 px the red/blue edge falls inside a pixel: LANCZOS rings there, area does not)
    ],
)
def test_an_rgb_jpeg_through_opencv_looks_as_pillow_would_store_it(
    size: tuple[int, int],
    image_size: int,
    stored: tuple[int, int],
    least_db: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _photo(size)
    fast = store_image(data, image_size, 90)
    assert (fast.width, fast.height) == stored and fast.transcoded
    im = Image.open(io.BytesIO(fast.data))
    assert (im.format, im.mode, im.size) == ("JPEG", "RGB", stored)
    monkeypatch.setattr(image, "_store_jpeg", lambda *args: None)  # Pillow's path, as before
    slow = store_image(data, image_size, 90)
    assert (slow.width, slow.height) == stored and slow.data != fast.data  # two paths
    reference = _reference(data, stored)
    fast_db, slow_db = _psnr(_pixels(fast.data), reference), _psnr(_pixels(slow.data), reference)
    assert fast_db > least_db and fast_db > slow_db - 1.0, (fast_db, slow_db)
    left, right = _pixels(fast.data)[stored[1] // 2, [1, stored[0] - 2]]
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]  # RGB, not OpenCV's BGR


def _rendered(width: int, height: int) -> bytes:
    """A sample-world photo (a textured animal on a background), JPEG."""
    species = generate_taxonomy("tiny", 0).species[0]
    return render_image(species.look, width=width, height=height, fmt="jpg", seed=5)


def test_the_fingerprint_of_a_kept_jpeg_is_the_one_dedup_decodes_again() -> None:
    data = _rendered(400, 300)
    kept = store_image(data, 512, 90, fingerprints=True)
    assert kept.data == data and not kept.transcoded
    assert kept.fingerprint is not None
    again = image_fingerprint(Image.open(io.BytesIO(kept.data)))  # dedup's decode of stored bytes
    assert unpack(kept.fingerprint).exact == again.exact  # the same pixels, in RGB order
    resized = store_image(_rendered(1600, 1200), 512, 90, fingerprints=True)
    assert resized.fingerprint is not None
    stored = image_fingerprint(Image.open(io.BytesIO(resized.data)))
    assert pdq_distance(unpack(resized.fingerprint).pdq, stored.pdq) <= 8


def test_a_broken_jpeg_fails_with_pillows_reason() -> None:
    data = _photo((1024, 768))
    with pytest.raises(ItemFailure) as cut:
        store_image(data[: len(data) // 2], 512, 90)
    assert cut.value.reason == "undecodable" and "truncated" in cut.value.detail
    with pytest.raises(ItemFailure) as header:
        store_image(data[:2] + b"\xff\xc0\x00\x11" + b"\x00" * 40, 512, 90)
    assert header.value.reason == "undecodable"


def test_a_rotated_jpeg_is_stored_upright_through_pillow() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _photo((800, 600), exif=exif.tobytes())
    stored = store_image(data, 512, 90)
    assert (stored.width, stored.height) == (512, 683) and stored.transcoded
    assert Image.open(io.BytesIO(stored.data)).getexif().get(0x0112, 1) == 1


def test_damaged_data_is_stored_as_pillow_would_and_libjpeg_stays_quiet(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A JPEG with a run of zeros inside its entropy-coded data: libjpeg decodes it with a
    warning (Pillow too, silently); the warning reaches no stderr."""
    data = bytearray(_rendered(1200, 900))
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(200)
    stored = store_image(bytes(data), 512, 90)
    assert (stored.width, stored.height) == (683, 512) and stored.transcoded
    assert "JPEG" not in capfd.readouterr().err

"""One pixel pipeline: every mode Pillow opens gives training (`read_image`) and `predict`
(`load_image`) the same pixels, by the choices `bofexits._pixels` documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bofexits._pixels import PixelError, decode_pixels
from bofexits.data.image_folder import read_image
from bofexits.deploy.predict import load_image
from bofexits.errors import DataError, InputError

# Every mode Pillow can create, with a file format that stores it (None: decoded from memory only).
MODES = {
    "1": "png",
    "L": "png",
    "LA": "png",
    "La": None,
    "P": "png",
    "PA": "tiff",
    "RGB": "png",
    "RGBA": "png",
    "RGBa": None,
    "RGBX": None,
    "CMYK": "jpg",
    "YCbCr": "jpg",
    "HSV": None,
    "I": "tiff",
    "I;16": "png",
    "I;16L": None,
    "I;16B": None,
    "I;16N": None,
    "F": "tiff",
}


def _sample(mode: str) -> Image.Image:
    """A 12x10 image in `mode` with varied pixels inside each mode's valid range."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    base = Image.fromarray(rgba, "RGBA")
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        deep = Image.fromarray(rng.integers(0, 65536, (10, 12)).astype(np.uint16))
        return deep if mode == "I;16" else deep.convert(mode) if mode != "I" else deep.convert("I")
    if mode == "F":
        return Image.fromarray(rng.random((10, 12)).astype(np.float32), "F")
    if mode == "PA":
        return base.convert("RGB").convert("P").convert("PA")
    return base.convert(mode)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("target", ["L", "RGB"])
def test_every_mode_gives_train_and_predict_the_same_pixels(tmp_path: Path, mode: str, target: str) -> None:
    image = _sample(mode)
    want = decode_pixels(image, (8, 9), target)
    assert want.dtype == np.uint8 and want.shape == (8, 9, 1 if target == "L" else 3)
    fmt = MODES[mode]
    if fmt is None:
        return
    path = tmp_path / f"x.{fmt}"
    image.save(path)
    train = read_image(path, (8, 9), target).permute(1, 2, 0).numpy()  # type: ignore[arg-type]
    use = load_image(path, (8, 9), target)
    np.testing.assert_array_equal(train, use)
    with Image.open(path) as reopened:
        np.testing.assert_array_equal(use, decode_pixels(reopened, (8, 9), target))


def test_alpha_is_composited_over_black() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 0, 255, 128
    got = decode_pixels(Image.fromarray(rgba, "RGBA"), (2, 2), "RGB")
    assert got[0, 0].tolist() == [0, 0, 0]  # fully transparent: black, whatever colour is stored
    assert got[0, 1].tolist() == [200, 200, 200]
    assert got[1, 0].tolist() == [100, 100, 100]  # round(200 * 128 / 255)
    la = Image.fromarray(rgba[..., [0, 3]].copy(), "LA")
    assert decode_pixels(la, (2, 2), "L")[..., 0].tolist() == [[0, 200], [100, 100]]
    palette = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), "P")
    palette.putpalette([255, 255, 255, 90, 90, 90] + [0] * 762)
    palette.info["transparency"] = 0
    assert decode_pixels(palette, (2, 2), "L")[..., 0].tolist() == [[0, 90], [90, 90]]


def test_deep_greys_scale_the_same_for_every_image() -> None:
    dark = Image.fromarray(np.full((2, 2), 257, np.uint16))  # 1/255 of the range
    assert decode_pixels(dark, (2, 2), "L").max() == 1  # not stretched to the image's own range
    assert decode_pixels(Image.new("I", (2, 2), 65535), (2, 2), "L").min() == 255
    assert decode_pixels(Image.new("F", (2, 2), 0.5), (2, 2), "L").max() == 128


@pytest.mark.parametrize(
    "image",
    [Image.new("I", (2, 2), 70000), Image.new("F", (2, 2), 2.0), Image.new("F", (2, 2), float("nan"))],
    ids=["int-over-16-bit", "float-over-1", "float-nan"],
)
def test_out_of_range_deep_pixels_are_refused(image: Image.Image) -> None:
    with pytest.raises(PixelError):
        decode_pixels(image, (2, 2), "L")


def test_lab_is_refused_in_both_places(tmp_path: Path) -> None:
    with pytest.raises(PixelError, match="LAB"):
        decode_pixels(Image.new("LAB", (4, 4)), (4, 4), "RGB")
    path = tmp_path / "x.tiff"
    Image.new("LAB", (28, 28)).save(path)
    with pytest.raises(DataError, match="LAB"):
        read_image(path, (28, 28), "RGB")
    with pytest.raises(InputError, match="LAB"):
        load_image(path, (28, 28), "RGB")


def test_exif_orientation_is_applied_in_both_places(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20), np.uint8)
    pixels[:, :5] = 255  # a bright band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels, "L").save(path, exif=exif)
    train = read_image(path, (20, 10), "L")[0].numpy()
    use = load_image(path, (20, 10), "L")[..., 0]
    np.testing.assert_array_equal(train, use)
    assert train.shape == (20, 10) and train[:5].mean() > 200 and train[10:].mean() < 50  # band on top


@pytest.mark.parametrize("kind", ["folder", "fifo", "devnull"])
def test_predict_names_what_a_non_file_is(tmp_path: Path, kind: str) -> None:
    import os

    if kind == "folder":
        path, word = tmp_path, "folder"
    elif kind == "fifo":
        path, word = tmp_path / "pipe.png", "FIFO"
        os.mkfifo(path)
    else:
        path, word = Path(os.devnull), "device"
    with pytest.raises(InputError, match=word) as err:
        load_image(path, (28, 28), "L")
    assert "does not exist" not in str(err.value)

"""Image-folder loader on real PNG/JPEG files: layouts, split, sizes, colour modes, errors, single images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from bofexits.data.image_folder import image_to_tensor, load_image_folder, read_image, split_files
from bofexits.data.registry import dataset_info, list_datasets, load_dataset
from bofexits.errors import ConfigError, DataError

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def save(
    path: Path, colour: tuple[int, int, int] | int, size: tuple[int, int] = (8, 8), mode: str = "RGB"
) -> Path:
    """A solid image of ``size`` (width, height) with one dot, so resizing and orientation are visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new(mode, size, colour)
    image.putpixel((0, 0), 255 if mode == "L" else (255, 255, 255))
    image.save(path)
    return path


def make_classes(root: Path, per_class: int = 5, **kwargs: object) -> None:
    for cls, colour in COLOURS.items():
        for i in range(per_class):
            save(root / cls / f"{i:02d}.png", colour, **kwargs)  # type: ignore[arg-type]


def test_single_folder_split(tmp_path: Path) -> None:
    make_classes(tmp_path / "pets")
    train, test = load_image_folder(tmp_path / "pets")
    assert train.classes == test.classes == ("cat", "dog", "emu")
    assert train.images.shape == (12, 3, 8, 8) and test.images.shape == (3, 3, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and test.labels.tolist() == [0, 1, 2]
    for ds in (train, test):  # every image carries its class's colour, so labels and pixels agree
        for image, label in zip(ds.images, ds.labels, strict=True):
            assert tuple(image[:, 4, 4].tolist()) == COLOURS[ds.classes[label]]
    assert (train.name, test.name) == ("pets/train", "pets/test")


def test_split_is_deterministic_and_depends_on_seed(tmp_path: Path) -> None:
    make_classes(tmp_path, per_class=10)
    a = load_image_folder(tmp_path, seed=0)[1]
    b = load_image_folder(tmp_path, seed=0)[1]
    assert torch.equal(a.images, b.images)
    names = [f"{i:02d}.png" for i in range(10)]
    tests = {seed: split_files(names, 0.3, seed)[1] for seed in range(5)}
    assert len({tuple(t) for t in tests.values()}) > 1 and all(len(t) == 3 for t in tests.values())


def test_split_files_properties() -> None:
    names = [f"img{i}.png" for i in range(40)]
    train, test = split_files(names, 0.25, seed=3)
    assert len(test) == 10 and sorted(train + test) == list(range(40)) and test == sorted(test)
    # The choice follows the names, not their order in the list.
    shuffled = names[::-1]
    _, test_shuffled = split_files(shuffled, 0.25, seed=3)
    assert {shuffled[i] for i in test_shuffled} == {names[i] for i in test}
    # Adding an image moves at most one existing image across the boundary.
    _, grown = split_files([*names, "new.png"], 0.25, seed=3)
    before, after = {names[i] for i in test}, {([*names, "new.png"])[i] for i in grown} - {"new.png"}
    assert len(before ^ after) <= 1
    assert split_files(["a"], 0.5, 0) == ([0], [])  # a class always keeps a training image
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        split_files(names, 1.0, 0)


def test_train_test_layout(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", per_class=3)
    make_classes(tmp_path / "test", per_class=2)
    save(tmp_path / "notes" / "x.png", 0)  # another folder beside train/ and test/: ignored
    train, test = load_image_folder(tmp_path, test_fraction=0.9)  # fraction unused with this layout
    assert (len(train), len(test)) == (9, 6) and train.classes == ("cat", "dog", "emu")
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_train_test_classes_must_match(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", per_class=1)
    make_classes(tmp_path / "test", per_class=1)
    save(tmp_path / "test" / "fox" / "a.png", 0)
    with pytest.raises(DataError, match="only in train: -; only in test: fox"):
        load_image_folder(tmp_path)


def test_mixed_sizes_are_resized_to_the_most_common(tmp_path: Path) -> None:
    save(tmp_path / "a" / "1.png", (10, 20, 30), size=(6, 4))
    save(tmp_path / "a" / "2.png", (10, 20, 30), size=(12, 9))
    save(tmp_path / "b" / "1.png", (40, 50, 60), size=(12, 9))
    save(tmp_path / "b" / "2.png", (40, 50, 60), size=(3, 3))
    train, test = load_image_folder(tmp_path, test_fraction=0.5)
    assert train.images.shape[1:] == test.images.shape[1:] == (3, 9, 12)  # (C, H, W); PIL sizes are (W, H)
    everything = torch.cat([train.images, test.images])
    assert sorted(tuple(im[:, 5, 6].tolist()) for im in everything) == [(10, 20, 30)] * 2 + [(40, 50, 60)] * 2
    small = load_image_folder(tmp_path, image_size=(5, 7), test_fraction=0.5)[0]
    assert small.images.shape[1:] == (3, 5, 7)
    assert load_image_folder(tmp_path, image_size=4, test_fraction=0.5)[0].images.shape[1:] == (3, 4, 4)


def test_grey_folder_is_one_channel_and_colour_wins(tmp_path: Path) -> None:
    for cls, level in (("a", 60), ("b", 120)):
        for i in range(3):
            save(tmp_path / cls / f"{i}.png", level, mode="L")
    train, _ = load_image_folder(tmp_path, test_fraction=0.34)
    assert train.images.shape[1] == 1 and len(train.mean) == 1
    save(tmp_path / "b" / "colour.png", (0, 0, 255))  # one colour image makes the whole set RGB
    train, test = load_image_folder(tmp_path, test_fraction=0.34)
    assert train.images.shape[1] == 3
    grey = torch.cat([train.images, test.images])
    assert sum(bool((im[0] == im[1]).all() and (im[1] == im[2]).all()) for im in grey) == 6  # grey stays grey
    forced = load_image_folder(tmp_path, mode="L", test_fraction=0.34)[0]
    assert forced.images.shape[1] == 1


def test_palette_images(tmp_path: Path) -> None:
    for cls, level in (("a", 50), ("b", 150)):
        for i in range(2):
            path = save(tmp_path / cls / f"{i}.png", level, mode="L")
            Image.open(path).convert("P").save(path)
    assert Image.open(tmp_path / "a" / "0.png").mode == "P"
    assert load_image_folder(tmp_path, test_fraction=0.5)[0].images.shape[1] == 1  # grey palette: grey
    Image.new("RGB", (8, 8), (255, 0, 0)).convert("P").save(tmp_path / "a" / "0.png")
    assert load_image_folder(tmp_path, test_fraction=0.5)[0].images.shape[1] == 3


def test_jpeg_and_other_files(tmp_path: Path) -> None:
    make_classes(tmp_path, per_class=2)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "cat" / "photo.JPEG")
    (tmp_path / "cat" / "readme.txt").write_text("not an image")
    save(tmp_path / "cat" / ".hidden" / "x.png", 0)
    save(tmp_path / "dog" / "nested" / "deeper.png", COLOURS["dog"])
    train, test = load_image_folder(tmp_path, test_fraction=0.3)
    assert torch.bincount(torch.cat([train.labels, test.labels])).tolist() == [3, 3, 2]


def test_mean_std_from_train_split(tmp_path: Path) -> None:
    make_classes(tmp_path)
    train, test = load_image_folder(tmp_path)
    x = train.images.to(torch.float64) / 255
    expected_mean = x.mean(dim=(0, 2, 3))
    expected_std = x.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(torch.tensor(train.mean, dtype=torch.float64), expected_mean)
    torch.testing.assert_close(torch.tensor(train.std, dtype=torch.float64), expected_std)
    assert test.mean == train.mean and test.std == train.std


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    make_classes(tmp_path)
    (tmp_path / "dog" / "03.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"cannot read image .*dog/03\.png.*replace or delete"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("explicit", [False, True])
def test_truncated_image_is_named(tmp_path: Path, explicit: bool) -> None:
    make_classes(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "emu" / "big.png"
    )
    big = tmp_path / "emu" / "big.png"
    big.write_bytes(big.read_bytes()[:400])
    kwargs: dict[str, object] = (
        {"image_size": 8, "mode": "RGB"} if explicit else {}
    )  # explicit: no header probe
    with pytest.raises(DataError, match=r"emu/big\.png"):
        load_image_folder(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nothing")
    save(tmp_path / "loose" / "a.png", 0)
    with pytest.raises(DataError, match=r"no class folders \(found images a\.png directly in it\)"):
        load_image_folder(tmp_path / "loose")
    save(tmp_path / "one" / "cat" / "a.png", 0)
    with pytest.raises(DataError, match="only the class folder cat/.*at least 2 classes"):
        load_image_folder(tmp_path / "one")
    make_classes(tmp_path / "empty", per_class=2)
    (tmp_path / "empty" / "fox").mkdir()
    (tmp_path / "empty" / "fox" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*empty/fox holds no \.png/\.jpg/\.jpeg images"):
        load_image_folder(tmp_path / "empty")
    make_classes(tmp_path / "tiny", per_class=1)
    with pytest.raises(DataError, match="too few images for a test split"):
        load_image_folder(tmp_path / "tiny")


@pytest.mark.parametrize(
    "kwargs", [{"mode": "CMYK"}, {"image_size": 0}, {"image_size": (4, 4, 4)}, {"test_fraction": 0.0}]
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, object]) -> None:
    make_classes(tmp_path)
    with pytest.raises(ConfigError):
        load_image_folder(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_image_to_tensor_matches_the_loader(tmp_path: Path) -> None:
    save(tmp_path / "a" / "x.png", (10, 20, 30), size=(10, 6))
    save(tmp_path / "a" / "y.png", (10, 20, 30), size=(10, 6))
    save(tmp_path / "b" / "x.png", (50, 60, 70), size=(7, 5))
    train, test = load_image_folder(tmp_path, test_fraction=0.5, mode="L")
    loaded = {tuple(im.shape): im for im in torch.cat([train.images, test.images])}
    assert list(loaded) == [(1, 6, 10)]
    with Image.open(tmp_path / "b" / "x.png") as image:
        single = image_to_tensor(image, (6, 10), "L")
    assert single.shape == (1, 6, 10) and single.dtype == torch.uint8
    assert any(torch.equal(single, im) for im in torch.cat([train.images, test.images]))
    assert torch.equal(read_image(tmp_path / "b" / "x.png", (6, 10), "L"), single)


def test_image_to_tensor_rules() -> None:
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    rgb = image_to_tensor(image, (2, 4), "RGB")
    assert rgb.shape == (3, 2, 4) and rgb[:, 0, 0].tolist() == [255, 0, 0]
    grey = image_to_tensor(image, 3, "L")
    assert grey.shape == (1, 3, 3) and int(grey[0, 1, 1]) == image.convert("L").getpixel((0, 0))
    with pytest.raises(ConfigError, match="mode"):
        image_to_tensor(image, 3, "RGBA")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="size"):
        image_to_tensor(image, (3, -1), "L")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A photo stored 8 wide x 4 high with "rotate 90" shows 4 wide x 8 high, in training and in prediction."""
    exif = Image.Exif()
    exif[0x0112] = 6
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            image = Image.new("RGB", (8, 4), (0, 0, 0))
            image.paste((255, 255, 255), (0, 0, 4, 4))  # left half white: tells a rotation from a resize
            image.save(tmp_path / cls / f"{i}.jpg", exif=exif)
    train, _ = load_image_folder(tmp_path, test_fraction=0.5)
    assert train.images.shape[1:] == (3, 8, 4)
    single = read_image(tmp_path / "a" / "0.jpg", (8, 4), "RGB")
    with Image.open(tmp_path / "a" / "0.jpg") as stored:
        shown = np.asarray(ImageOps.exif_transpose(stored))  # (H, W, 3) as a viewer displays it
        resized = np.asarray(stored.resize((4, 8), Image.Resampling.BILINEAR))
    assert torch.equal(single, torch.from_numpy(shown.copy()).permute(2, 0, 1))
    assert not torch.equal(single, torch.from_numpy(resized.copy()).permute(2, 0, 1))


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.png", 4, "L")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=r"bad\.jpg"):
        read_image(tmp_path / "bad.jpg", 4, "L")


def test_registry(tmp_path: Path) -> None:
    make_classes(tmp_path)
    assert "image-folder" in list_datasets()
    train, test = load_dataset("image-folder", tmp_path)
    assert (len(train), len(test)) == (12, 3)
    with pytest.raises(ConfigError, match="--data-dir"):
        load_dataset("image-folder")
    assert dataset_info("image-folder") == (None, None)
    with pytest.raises(ConfigError, match="unknown dataset"):
        dataset_info("imagenet")

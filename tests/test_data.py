"""Data: every image mode a user may have, preprocessing transforms, folder datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeezenet.data import (
    CAFFE_SQUEEZENET,
    IMAGENET_DEFAULT,
    ImageListDataset,
    Preprocessing,
    build_transform,
    collate_skipping_bad,
    find_images,
    grayscale,
    load_image,
    scan_class_folders,
)
from squeezenet.errors import DataError, ImageError, ModelError


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(int)


def test_jpeg_and_png_rgb(tmp_path):
    img = Image.new("RGB", (30, 20), (200, 100, 50))
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "a.jpg", quality=95)
    png = load_image(tmp_path / "a.png")
    assert (png.mode, png.size) == ("RGB", (30, 20))
    assert pixels(png)[5, 5].tolist() == [200, 100, 50]
    jpg = load_image(tmp_path / "a.jpg")
    assert (jpg.mode, jpg.size) == ("RGB", (30, 20))
    assert np.abs(pixels(jpg)[5, 5] - [200, 100, 50]).max() <= 3
    gray = load_image(tmp_path / "a.png", mode="L")
    assert gray.mode == "L"


def test_grayscale_to_rgb(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB"
    assert pixels(img)[0, 0].tolist() == [77, 77, 77]


def test_rgba_transparent_composites_to_white(tmp_path):
    arr = np.zeros((10, 10, 4), dtype=np.uint8)  # black, fully transparent
    arr[:, 5:] = [255, 0, 0, 255]  # right half opaque red
    arr[0, 0] = [0, 0, 255, 128]  # half-transparent blue
    Image.fromarray(arr, "RGBA").save(tmp_path / "t.png")
    px = pixels(load_image(tmp_path / "t.png"))
    assert px[5, 2].tolist() == [255, 255, 255]
    assert px[5, 7].tolist() == [255, 0, 0]
    assert np.abs(px[0, 0] - [127, 127, 255]).max() <= 1


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))  # 0 = black, 1 = green
    img.paste(1, (4, 0, 8, 8))
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    assert "transparency" in Image.open(tmp_path / "p.png").info
    px = pixels(load_image(tmp_path / "p.png"))
    assert px[0, 0].tolist() == [255, 255, 255]  # transparent black -> white, not black
    assert px[0, 6].tolist() == [0, 200, 0]


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    img = load_image(tmp_path / "c.jpg")
    assert img.mode == "RGB"
    assert np.abs(pixels(img)[8, 8] - [255, 0, 0]).max() <= 8  # red, not inverted


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.zeros((8, 8), dtype=np.uint16)
    arr[0:2], arr[2:4], arr[4:6] = 65535, 32768, 200
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    px = pixels(load_image(tmp_path / "d.png", mode="L"))
    assert px[0, 0] == 255
    assert px[2, 0] == 128
    assert px[4, 0] == 1  # 200 / 65535 of full scale, not 200
    assert px[6, 0] == 0
    assert pixels(load_image(tmp_path / "d.png"))[2, 0].tolist() == [128, 128, 128]


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "o.jpg", exif=exif)
    assert Image.open(tmp_path / "o.jpg").size == (40, 20)
    assert load_image(tmp_path / "o.jpg").size == (20, 40)


def test_not_an_image(tmp_path):
    (tmp_path / "fake.jpg").write_text("this is not a JPEG\n")
    with pytest.raises(ImageError, match=r"fake\.jpg"):
        load_image(tmp_path / "fake.jpg")
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_caffe_transform_is_bgr_minus_means():
    img = Image.new("RGB", (300, 260), (200, 100, 50))
    x = build_transform(CAFFE_SQUEEZENET)(img)
    assert x.shape == (3, 227, 227)
    assert x.dtype == torch.float32
    # channel 0 is blue: 50 - 104; then green 100 - 117; red 200 - 123
    assert x[:, 100, 100].tolist() == pytest.approx([-54.0, -17.0, 77.0], abs=1e-4)


def test_caffe_transform_squashes_to_256():
    # 512 wide, left quarter black: squashed to 256x256 the black band is 64 wide and
    # reaches into the 227 centre crop; a shorter-side resize would crop it away
    arr = np.full((256, 512, 3), 255, dtype=np.uint8)
    arr[:, :128] = 0
    x = build_transform(CAFFE_SQUEEZENET)(Image.fromarray(arr))
    assert x[0, 100, 20] == pytest.approx(0 - 104.0, abs=1e-3)
    assert x[0, 100, 100] == pytest.approx(255 - 104.0, abs=1e-3)


def test_imagenet_default_normalises_in_unit_range():
    img = Image.new("RGB", (256, 300), (255, 128, 0))
    x = build_transform(IMAGENET_DEFAULT)(img)
    assert x.shape == (3, 224, 224)
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    assert x[:, 50, 50].tolist() == pytest.approx(expected, abs=1e-4)


def test_grayscale_preprocessing():
    pre = grayscale(IMAGENET_DEFAULT)
    assert (pre.channel_order, pre.in_chans, pre.image_mode) == ("L", 1, "L")
    assert pre.mean == pytest.approx((sum(IMAGENET_DEFAULT.mean) / 3,))
    x = build_transform(pre)(Image.new("L", (230, 230), 255))
    assert x.shape == (1, 224, 224)


def test_preprocessing_round_trip_and_validation():
    for pre in (IMAGENET_DEFAULT, CAFFE_SQUEEZENET):
        assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ModelError):
        Preprocessing(channel_order="XYZ")
    with pytest.raises(ModelError):
        Preprocessing(mean=(0.5,))
    with pytest.raises(ModelError):
        Preprocessing.from_dict({"crop": "big"})


def torchvision_normalisation(pre: Preprocessing) -> list:
    """The torch steps ``pixels.normalize`` replaced (PIL image or uint8 tensor in)."""
    from torchvision.transforms import v2

    steps = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=pre.pixel_range == 1.0)]
    if pre.channel_order == "BGR":
        steps.append(v2.Lambda(lambda x: x.flip(-3)))
    return [*steps, v2.Normalize(mean=list(pre.mean), std=list(pre.std))]


def torchvision_reference(pre: Preprocessing):
    """The torchvision pipeline ``build_transform`` was, whose numbers it must keep (to 1e-6)."""
    from torchvision.transforms import InterpolationMode, v2

    resize = list(pre.resize) if isinstance(pre.resize, tuple) else pre.resize
    geometry = [v2.Resize(resize, interpolation=InterpolationMode(pre.interpolation), antialias=True)]
    return v2.Compose([*geometry, v2.CenterCrop(pre.crop), *torchvision_normalisation(pre)])


REFERENCE_CASES = {
    "imagenet": IMAGENET_DEFAULT,
    "caffe": CAFFE_SQUEEZENET,
    "grayscale": grayscale(IMAGENET_DEFAULT),
    "bicubic-squash": Preprocessing(resize=(200, 150), crop=128, interpolation="bicubic"),
    "nearest": Preprocessing(resize=40, crop=36, interpolation="nearest"),
    # a crop wider than the image: torchvision pads 1 column before it, where rounding -1.5 says 2
    "crop-pads-the-image": Preprocessing(resize=(30, 29), crop=32),
}


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_build_transform_keeps_torchvisions_numbers(name):
    pre = REFERENCE_CASES[name]
    rng = np.random.default_rng(0)
    for height, width in [(300, 411), (411, 300), (64, 64)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(pre.image_mode)
        got, expected = build_transform(pre)(image), torchvision_reference(pre)(image)
        assert got.dtype == torch.float32 and got.shape == expected.shape == (pre.in_chans, pre.crop, pre.crop)
        assert (got - expected).abs().max() <= 1e-6 * pre.pixel_range, (height, width)


def test_build_transform_reads_cached_tensors_as_the_same_pixels():
    """The in-memory cache hands uint8 (C, H, W) tensors over: the numbers of the PIL image."""
    arr = np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    for pre in (IMAGENET_DEFAULT, CAFFE_SQUEEZENET, Preprocessing(resize=50, crop=48)):
        from_tensor = build_transform(pre)(torch.from_numpy(arr).permute(2, 0, 1))
        assert torch.equal(from_tensor, build_transform(pre)(Image.fromarray(arr)))


@pytest.mark.parametrize("name", ["imagenet", "caffe", "grayscale"])
def test_training_normalisation_keeps_torchvisions_numbers(name):
    from torchvision.transforms import v2

    from squeezenet.data.preprocessing import ToNormalizedTensor

    pre = REFERENCE_CASES[name]
    arr = np.random.default_rng(2).integers(0, 256, (40, 50, pre.in_chans), dtype=np.uint8)
    image = Image.fromarray(arr[:, :, 0] if pre.in_chans == 1 else arr)
    reference = v2.Compose(torchvision_normalisation(pre))
    for pixels_in in (image, torch.from_numpy(arr).permute(2, 0, 1)):  # a PIL image or torchvision's tensor
        got, expected = ToNormalizedTensor(pre)(pixels_in), reference(pixels_in)
        assert got.shape == expected.shape and (got - expected).abs().max() <= 1e-6 * pre.pixel_range


def test_missing_settings_take_the_defaults_everywhere():
    """A weights file's partial preprocessing means the same to the dataclass and to pixels.py."""
    from squeezenet.data import pixels as px

    assert Preprocessing.from_dict({}) == Preprocessing() == Preprocessing.from_dict(px.settings({}))
    assert px.settings({"crop": 227}) == {**IMAGENET_DEFAULT.to_dict(), "crop": 227}
    assert px.settings(CAFFE_SQUEEZENET) == CAFFE_SQUEEZENET.to_dict()


def test_bad_settings_are_refused_before_the_first_image():
    with pytest.raises(ModelError, match="pixel_range"):
        build_transform(Preprocessing(pixel_range=2.0))
    with pytest.raises(ModelError, match="interpolation"):
        build_transform(Preprocessing(interpolation="sinc"))


def test_pixels_module_imports_nothing_of_the_package():
    """The NumPy runtime loads it by file path, outside any package."""
    import ast

    from squeezenet.data import pixels as px

    tree = ast.parse(Path(px.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"__future__", "types", "numpy", "PIL"}, modules


def test_folders_and_datasets(tmp_path):
    root = tmp_path / "root"
    for name in ("b_class", "a_class"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), (10, 10, 10)).save(root / name / "x.png")
    (root / "a_class" / "notes.txt").write_text("ignored")
    (root / "a_class" / "bad.jpg").write_bytes(b"garbage")
    classes, samples = scan_class_folders(root)
    assert classes == ["a_class", "b_class"]
    assert [(p.name, c) for p, c in samples] == [("bad.jpg", "a_class"), ("x.png", "a_class"), ("x.png", "b_class")]
    assert [p.name for p in find_images([root])] == ["bad.jpg", "x.png", "x.png"]

    pre = Preprocessing(resize=32, crop=32)
    dataset = ImageListDataset([(p, i) for i, (p, _) in enumerate(samples)], build_transform(pre))
    batch = collate_skipping_bad([dataset[i] for i in range(len(dataset))])
    assert batch.images.shape == (2, 3, 32, 32)
    assert batch.targets.tolist() == [1, 2]
    assert len(batch.skipped) == 1 and "bad.jpg" in batch.skipped[0]
    empty = collate_skipping_bad([dataset[0]])
    assert empty.images.numel() == 0 and empty.paths == []

    with pytest.raises(DataError, match="no such"):
        scan_class_folders(tmp_path / "missing")
    with pytest.raises(DataError, match="no such file"):
        find_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found none"):
        scan_class_folders(tmp_path / "empty")
    with pytest.raises(DataError, match="no image files"):
        find_images([tmp_path / "empty"])
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DataError, match="hold no image files"):
        scan_class_folders(tmp_path / "empty")


def test_linked_folders_are_followed_once(tmp_path):
    """A subset made of links to class folders is read; a link back to a parent cannot loop."""
    real = tmp_path / "real"
    for name in ("cat", "dog"):
        (real / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(real / name / f"{name}.png")
    subset = tmp_path / "subset"
    subset.mkdir()
    (subset / "cat").symlink_to(real / "cat", target_is_directory=True)
    (subset / "cat_again").symlink_to(real / "cat", target_is_directory=True)
    (real / "cat" / "loop").symlink_to(subset, target_is_directory=True)
    assert [p.relative_to(subset).as_posix() for p in find_images([subset])] == ["cat/cat.png"]
    classes, samples = scan_class_folders(subset)
    assert classes == ["cat", "cat_again"]
    assert sorted(c for _, c in samples) == ["cat", "cat_again"]

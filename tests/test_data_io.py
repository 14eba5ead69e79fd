"""read_image / read_mask across formats, find_file, atomic PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmseg.data.io import (
    IMAGE_SUFFIXES,
    find_file,
    index_folder,
    read_image,
    read_mask,
    read_size,
    write_mask_png,
)
from gmseg.errors import DataError

H, W = 16, 24


def _rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _square(value: int = 1, dtype: type = np.uint8) -> np.ndarray:
    m = np.zeros((H, W), dtype=dtype)
    m[4:10, 6:14] = value
    return m


def _expected_square() -> np.ndarray:
    return (_square() > 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_read_image_lossless_rgb_roundtrip(tmp_path: Path, ext: str) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / f"a{ext}")
    out = read_image(tmp_path / f"a{ext}")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_read_image_jpeg(tmp_path: Path) -> None:
    rgb = np.full((H, W, 3), (200, 40, 90), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() < 8


def test_read_image_gray_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_read_image_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(), np.zeros((H, W), np.uint8)])  # fully transparent: must not blacken
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


def test_read_image_la_and_palette(tmp_path: Path) -> None:
    gray = _rgb()[..., 0]
    Image.fromarray(np.dstack([gray, np.full_like(gray, 7)])).save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[..., 1], gray)

    pal = Image.frombytes("P", (W, H), _square(1).tobytes())  # palette indices 0/1
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert tuple(out[5, 8]) == (10, 200, 30) and tuple(out[0, 0]) == (0, 0, 0)


def test_read_image_16bit_scaled_by_257(tmp_path: Path) -> None:
    data = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    for ext in (".png", ".tif"):
        Image.fromarray(data).save(tmp_path / f"d{ext}")
        out = read_image(tmp_path / f"d{ext}")
        assert out.dtype == np.uint8 and out.shape == (H, W, 3)
        np.testing.assert_array_equal(out[..., 0], np.rint(data / 257.0).astype(np.uint8))
        assert out[-1, -1, 0] == 255 and out[0, 0, 0] == 0


def test_read_image_float_tiff(tmp_path: Path) -> None:
    data = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    Image.fromarray(data).save(tmp_path / "f.tif")
    out = read_image(tmp_path / "f.tif")
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_read_image_corrupt_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError) as info:
        read_image(bad)
    assert str(bad) in str(info.value)


def test_read_image_truncated_names_file(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_image(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(DataError) as info:
        read_size(bad)
    assert str(bad) in str(info.value)


def test_read_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.png"):
        read_image(tmp_path / "nope.png")


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("value", [1, 255])
def test_read_mask_binary_values(tmp_path: Path, value: int) -> None:
    Image.fromarray(_square(value)).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, _expected_square())


def test_read_mask_bmp_and_mode_1(tmp_path: Path) -> None:
    Image.fromarray(_square(255)).save(tmp_path / "m.bmp")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.bmp"), _expected_square())
    Image.fromarray(_square(255)).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), _expected_square())


def test_read_mask_palette_judged_by_colour(tmp_path: Path) -> None:
    # Adaptive palettes can put white at index 0: the colour, not the index, decides.
    idx = 1 - _square(1)
    img = Image.frombytes("P", (W, H), idx.tobytes())
    img.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), _expected_square())


def test_read_mask_rgb_any_channel(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[4:10, 6:14, 0] = 255  # red lesion only
    Image.fromarray(rgb).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), _expected_square())
    rgba = np.dstack([rgb, np.full((H, W), 255, np.uint8)])  # opaque alpha must not make everything fg
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), _expected_square())


def test_read_mask_alpha_only_annotation(tmp_path: Path) -> None:
    # colour all black, lesion drawn into alpha (some annotation tools export this way)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = _square(255)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), _expected_square())


def test_read_mask_16bit_and_instance_labels(tmp_path: Path) -> None:
    m16 = _square(65535, np.uint16)
    Image.fromarray(m16).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), _expected_square())
    labels = np.zeros((H, W), np.uint8)
    labels[1:3, 1:3] = 1
    labels[10:12, 10:12] = 7
    Image.fromarray(labels).save(tmp_path / "inst.bmp")
    np.testing.assert_array_equal(read_mask(tmp_path / "inst.bmp"), (labels > 0).astype(np.uint8))


def test_read_mask_threshold(tmp_path: Path) -> None:
    m = np.zeros((H, W), np.uint8)
    m[0, :4] = [3, 100, 128, 200]  # e.g. JPEG noise and a soft edge
    Image.fromarray(m).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png")[0, :4].tolist() == [1, 1, 1, 1]
    assert read_mask(tmp_path / "m.png", threshold=0.5)[0, :4].tolist() == [0, 0, 1, 1]
    m16 = m.astype(np.uint16) * 257
    Image.fromarray(m16).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png", threshold=0.5)[0, :4].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        read_mask(tmp_path / "m.png", threshold=2.0)


def test_read_mask_jpeg_with_threshold(tmp_path: Path) -> None:
    Image.fromarray(_square(255)).save(tmp_path / "m.jpg", quality=75)
    out = read_mask(tmp_path / "m.jpg", threshold=0.5)
    assert (out != _expected_square()).sum() <= 4


def test_read_mask_corrupt_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "mask.bmp"
    bad.write_bytes(b"BM" + b"\x00" * 20)
    with pytest.raises(DataError) as info:
        read_mask(bad)
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------------------------- files, writing


def test_find_file_prefers_png_and_handles_case(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg")
    assert find_file(tmp_path, "a") == tmp_path / "a.jpg"
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert find_file(tmp_path, "a") == tmp_path / "a.png"
    Image.fromarray(_rgb()).save(tmp_path / "B.TIF", format="TIFF")
    assert find_file(tmp_path, "B") == tmp_path / "B.TIF"
    Image.fromarray(_rgb()).save(tmp_path / "c.Png", format="PNG")
    assert find_file(tmp_path, "c") == tmp_path / "c.Png"
    assert find_file(tmp_path, "missing") is None
    assert find_file(tmp_path / "no_dir", "a") is None
    assert set(IMAGE_SUFFIXES) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    index = index_folder(tmp_path)
    assert index["a"].suffix == ".png" and set(index) == {"a", "B", "c"}


def test_write_mask_png_is_0_255_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "m.png"
    write_mask_png(target, _square(1))
    with Image.open(target) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), _square(1) * 255)
    np.testing.assert_array_equal(read_mask(target), _expected_square())
    assert [p.name for p in target.parent.iterdir()] == ["m.png"]  # no temp file left behind
    write_mask_png(target, _square(1).astype(bool))  # overwrite works
    with pytest.raises(ValueError):
        write_mask_png(target, np.full((H, W), 0.3))

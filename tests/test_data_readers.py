"""The reader/writer registry: names split by known endings, formats chosen by ending, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmseg.data import readers
from gmseg.data.io import IMAGE_SUFFIXES, find_file, index_folder, is_image_file, read_image, read_mask, read_size
from gmseg.data.readers import find_format, format_for, split_name
from gmseg.errors import DataError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("case.png", ("case", ".png")),
        ("case.PNG", ("case", ".PNG")),
        ("benign (1)_mask.png", ("benign (1)_mask", ".png")),
        ("img.v2.png", ("img.v2", ".png")),  # only the last dot, as Path does
        ("case.nii.gz", ("case", ".nii.gz")),  # a multi-part ending stays whole
        ("case.NII.GZ", ("case", ".NII.GZ")),
        ("scan.v1.nii.gz", ("scan.v1", ".nii.gz")),
        ("case.prob.npy", ("case", ".prob.npy")),
        ("case.overlay.png", ("case.overlay", ".png")),  # not an ending of its own: evaluate skips it by name
        ("archive.tar.gz", ("archive.tar", ".gz")),  # unknown multi-part endings split as Path does
        (".nii.gz", (".nii", ".gz")),  # nothing before the ending: Path's rule
        (".hidden", (".hidden", "")),
        ("README", ("README", "")),
    ],
)
def test_split_name(name: str, expected: tuple[str, str]) -> None:
    assert split_name(name) == expected
    assert split_name(Path("/some/dir") / name) == expected
    assert "".join(split_name(name)) == name


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "b.c.JPEG", "x.bmp", "y.tif", "y.tiff", "z.Png"])
def test_split_name_agrees_with_path_for_every_supported_single_ending(name: str) -> None:
    assert split_name(name) == (Path(name).stem, Path(name).suffix)


def test_registry_order_is_the_preference_order() -> None:
    assert IMAGE_SUFFIXES == readers.SUFFIXES == (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
    assert [f.name for f in readers.FORMATS] == ["PNG", "JPEG", "BMP", "TIFF"]
    assert [f.name for f in readers.FORMATS if f.lossy] == ["JPEG"]
    assert find_format("a.JPG").name == "JPEG" and find_format("a.gif") is None


@pytest.mark.parametrize("name", ["scan.gif", "scan.webp", "scan"])
def test_unsupported_endings_name_the_file_and_the_supported_endings(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")  # readable bytes, wrong ending
    for read in (read_image, read_mask, read_size, format_for):
        with pytest.raises(DataError) as info:
            read(path)
        message = str(info.value)
        assert str(path) in message
        assert "supported endings: .png, .jpg, .jpeg, .bmp, .tif, .tiff" in message
    assert not is_image_file(path)


def test_folder_index_and_lookup_use_the_name_split(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "case.v2.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "case.v2.Tif", format="TIFF")
    (tmp_path / "case.v2.nii.gz").write_bytes(b"a volume: not a 2D image")
    (tmp_path / "case.v2.prob.npy").write_bytes(b"")
    assert index_folder(tmp_path) == {"case.v2": tmp_path / "case.v2.png"}
    assert find_file(tmp_path, "case.v2") == tmp_path / "case.v2.png"
    (tmp_path / "case.v2.png").unlink()
    assert find_file(tmp_path, "case.v2") == tmp_path / "case.v2.Tif"  # mixed-case ending


def test_write_array_picks_the_format_by_ending(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    readers.write_array(tmp_path / "a.bmp", rgb)
    readers.write_array(tmp_path / "b.name", rgb, suffix=".png")
    with Image.open(tmp_path / "a.bmp") as img:
        assert img.format == "BMP"
    with Image.open(tmp_path / "b.name") as img:
        assert img.format == "PNG"
    assert np.array_equal(read_image(tmp_path / "a.bmp"), rgb)
    with pytest.raises(DataError, match="supported endings"):
        readers.write_array(tmp_path / "c.gif", rgb)
    assert not (tmp_path / "c.gif").exists()


def test_a_volume_where_a_2d_image_is_expected_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    for read in (read_image, read_mask, read_size, format_for):
        with pytest.raises(DataError, match="a volume where a 2D image is expected") as info:
            read(path)
        assert str(path) in str(info.value) and "NIfTI" in str(info.value)
    assert not is_image_file(path)


# ------------------------------------------------- issue #41 C: 16-bit scaling, EXIF orientation, pages


def _declare_bits(path: Path, bits: int) -> None:
    """Insert a PNG sBIT chunk (right after IHDR) declaring ``bits`` significant bits per sample."""
    import struct
    import zlib

    data = path.read_bytes()
    end = 8 + 8 + 13 + 4
    body = b"sBIT" + bytes([bits])
    path.write_bytes(data[:end] + struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body)) + data[end:])


def _scan(hot: int | None = None) -> np.ndarray:
    data = np.linspace(0, 4000, 24 * 32).reshape(24, 32).astype(np.uint16)
    if hot is not None:
        data[0, 0] = hot
    return data


@pytest.mark.parametrize("ending", [".png", ".tif"])
def test_16bit_brightness_does_not_depend_on_one_hot_pixel(tmp_path: Path, ending: str) -> None:
    """Listed: two images differing by one hot pixel got 4x different brightness (each image's own maximum
    chose the bit depth). The file's declared depth decides now: every other pixel reads the same."""
    Image.fromarray(_scan()).save(tmp_path / f"a{ending}")
    Image.fromarray(_scan(hot=5000)).save(tmp_path / f"b{ending}")
    notes: list[str] = []
    a, b = read_image(tmp_path / f"a{ending}", notes), read_image(tmp_path / f"b{ending}", notes)
    np.testing.assert_array_equal(a.reshape(-1, 3)[1:], b.reshape(-1, 3)[1:])
    assert a[-1, -1, 0] == round(4000 / 257)  # 16-bit container, nothing declared: divided by 257
    assert all("declared 16-bit" in n for n in notes) and "fit 12 bits" in notes[0]  # says which, and the fix


def test_a_declared_12_bit_png_is_read_at_12_bits_and_hot_pixels_clip(tmp_path: Path) -> None:
    """Variant: a PNG whose sBIT chunk declares 12 bits is divided by 4095 whatever its maximum."""
    for name, hot in (("a", None), ("b", 5000)):
        Image.fromarray(_scan(hot)).save(tmp_path / f"{name}.png")
        _declare_bits(tmp_path / f"{name}.png", 12)
    notes: list[str] = []
    a, b = read_image(tmp_path / "a.png", notes), read_image(tmp_path / "b.png", notes)
    np.testing.assert_array_equal(a.reshape(-1, 3)[1:], b.reshape(-1, 3)[1:])
    assert a[-1, -1, 0] == round(4000 / 4095 * 255) and b[0, 0, 0] == 255
    assert "declared 12-bit" in notes[1] and "1 pixel(s) above it clipped" in notes[1]


def test_training_and_prediction_read_a_16_bit_image_alike(tmp_path: Path) -> None:
    """prepare (what training reads) and predict (read_image on the raw file) scale by the same rule."""
    from gmseg.data.prepare import prepare_folders

    (tmp_path / "raw").mkdir()
    (tmp_path / "gt").mkdir()
    for name, hot in (("a", None), ("b", 5000)):
        Image.fromarray(_scan(hot)).save(tmp_path / "raw" / f"{name}.png")
        Image.fromarray((_scan() > 2000).astype(np.uint8) * 255).save(tmp_path / "gt" / f"{name}.png")
    prepare_folders(tmp_path / "raw", tmp_path / "gt", tmp_path / "prepared", test_fraction=0.5)
    for name in ("a", "b"):
        prepared = read_image(tmp_path / "prepared" / "images" / f"{name}.png")
        np.testing.assert_array_equal(prepared, read_image(tmp_path / "raw" / f"{name}.png"))


def _oriented(path: Path, array: np.ndarray, orientation: int, fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, format=fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {}))


def _marked(height: int, width: int) -> np.ndarray:
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:10, :10] = 255  # a bright corner block where the file stores row 0, column 0
    return arr


def test_exif_orientation_is_applied_to_a_jpeg(tmp_path: Path) -> None:
    """Listed: a JPEG displayed 60x80 (width x height) was read 80x60. Orientation 6 = rotate 90 clockwise."""
    path = tmp_path / "photo.jpg"
    _oriented(path, _marked(60, 80), 6, "JPEG")
    image = read_image(path)
    assert image.shape == (80, 60, 3)  # 80 tall, 60 wide, as displayed
    assert read_size(path) == (60, 80) and readers.header_size(path) == (60, 80)
    assert image[:10, -10:].mean() > 200 and image[-10:, :10].mean() < 50  # the corner went top right
    assert read_mask(path).shape == (80, 60) and read_volume_shape(path) == (1, 80, 60, 3)


def read_volume_shape(path: Path) -> tuple[int, ...]:
    return readers.read_volume(path).array.shape


_UPRIGHT = {  # EXIF orientation -> what a viewer shows, in numpy terms
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_exif_orientation_of_a_png_and_its_upright_mask_agree(tmp_path: Path, orientation: int) -> None:
    """Variant: a PNG photo with EXIF orientation, and its mask drawn on the displayed picture (no EXIF):
    image and mask are read the same way up, so the dataset check and the pixels agree."""
    from gmseg.data.dataset import check_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    stored = _marked(30, 40)
    _oriented(tmp_path / "images" / "p.png", stored, orientation, "PNG")
    image = read_image(tmp_path / "images" / "p.png")
    np.testing.assert_array_equal(image, _UPRIGHT[orientation](stored))
    mask = (image[..., 0] > 127).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "masks" / "p.png")
    check_dataset(tmp_path)  # sizes agree: image read upright, mask stored upright
    np.testing.assert_array_equal(read_mask(tmp_path / "masks" / "p.png"), (image[..., 0] > 127).astype(np.uint8))


def _two_pages(path: Path) -> None:
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200)]
    pages[0].save(path, save_all=True, append_images=pages[1:])


def test_a_multi_page_tiff_is_refused_not_read_as_page_one(tmp_path: Path) -> None:
    """Listed: a multi-page TIFF silently used page 1."""
    path = tmp_path / "stack.tif"
    _two_pages(path)
    with pytest.raises(DataError) as info:
        read_image(path)
    assert "multi-page image" in str(info.value).splitlines()[0] and str(path) in str(info.value)
    assert "2 pages" in str(info.value)


def test_a_multi_page_mask_fails_the_dataset_check_and_one_page_reads(tmp_path: Path) -> None:
    """Variant: the dataset check (sizes only), the mask reader and the volume reader refuse it too."""
    from gmseg.data.dataset import check_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    _two_pages(tmp_path / "masks" / "a.tiff")
    for read in (read_mask, read_size, readers.read_volume):
        with pytest.raises(DataError, match="multi-page"):
            read(tmp_path / "masks" / "a.tiff")
    with pytest.raises(DataError, match="holds 2 pages"):
        check_dataset(tmp_path)
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "masks" / "a.tiff")
    check_dataset(tmp_path)
    assert read_mask(tmp_path / "masks" / "a.tiff").all()

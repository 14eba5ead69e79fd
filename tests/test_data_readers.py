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

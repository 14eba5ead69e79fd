"""DICOM series: a folder of .dcm slices read as one volume with the geometry of its headers (SimpleITK's
ImageSeriesReader), and refused clearly when it is not one readable series."""

from __future__ import annotations

import locale
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gmseg.data.formats.dicom import is_dicom_series, read_dicom_series
from gmseg.data.readers import output_suffix, read_volume, write_volume
from gmseg.errors import DataError

ROOT_UID = "1.2.826.0.1.3680043.2.1125.9"


@contextmanager
def gdcm_call() -> Iterator[None]:
    """GDCM's DICOM writer sets the C locale and leaves it set, after which Python opens text as ASCII and
    later tests reading UTF-8 files fail: put the locale back (gmseg only reads DICOM, which leaves it)."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_series(
    folder: Path,
    array: np.ndarray,
    series: str = "1",
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.8),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    origin: tuple[float, float, float] = (-10.0, 5.0, 30.0),
    names: list[str] | None = None,
) -> Path:
    """One .dcm file per z slice of ``array`` (Z, Y, X), as a scanner exports a series: pixel spacing (row,
    column), each slice's position along the orientation's normal, one Series Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    row, column = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, column)
    uid = f"{ROOT_UID}.{series}"
    for z in range(array.shape[0]):
        image = sitk.GetImageFromArray(array[z])
        image.SetSpacing((spacing[2], spacing[1]))  # ITK's (x, y); the writer stores it as PixelSpacing
        position = np.array(origin) + z * spacing[0] * normal
        tags = {
            "0008|0060": "MR",
            "0008|0018": f"{uid}.{z + 1}",
            "0020|000d": f"{ROOT_UID}.0",
            "0020|000e": uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "\\".join(str(v) for v in orientation),
            "0028|0030": f"{spacing[1]}\\{spacing[2]}",
            "0018|0050": str(spacing[0]),
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / (names[z] if names else f"slice_{series}_{z:03d}.dcm")))
        with gdcm_call():  # GDCM leaves the C locale set; later tests read UTF-8 text
            writer.Execute(image)
    return folder


def scan(shape=(5, 6, 7)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) % 300 - 100).astype(np.int16)


def test_a_series_folder_is_one_volume_with_its_geometry(tmp_path):
    array = scan()
    folder = write_series(tmp_path / "series", array)
    assert is_dicom_series(folder) and not is_dicom_series(tmp_path / "nothing")
    volume = read_volume(folder)  # the registry's reader takes the folder
    assert volume.is_3d and volume.path == folder
    assert volume.array.dtype == np.int16 and np.array_equal(volume.array, array)
    assert volume.geometry.spacing == pytest.approx((2.5, 0.7, 0.8))  # (z, y, x): slice gap, then PixelSpacing
    assert volume.geometry.origin == pytest.approx((-10.0, 5.0, 30.0))
    assert volume.geometry.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_slices_are_ordered_by_position_not_by_file_name(tmp_path):
    array = scan()
    names = [f"IM{9 - z}.dcm" for z in range(array.shape[0])]  # file names in the reverse order
    volume = read_dicom_series(write_series(tmp_path / "series", array, names=names))
    assert np.array_equal(volume.array, array)


def test_an_oblique_series_keeps_its_direction(tmp_path):
    sagittal = (0, 1, 0, 0, 0, -1)  # rows along y, columns along -z: the normal is -x
    volume = read_dicom_series(write_series(tmp_path / "series", scan(), orientation=sagittal))
    direction = np.array(volume.geometry.direction).reshape(3, 3)
    assert direction[:, 0] == pytest.approx([0, 1, 0]) and direction[:, 1] == pytest.approx([0, 0, -1])
    assert direction[:, 2] == pytest.approx([-1, 0, 0])


def test_a_prediction_of_a_series_is_nifti_on_the_same_grid(tmp_path):
    folder = write_series(tmp_path / "case_7", scan())
    assert output_suffix(folder) == ".nii.gz"
    volume = read_volume(folder)
    labels = (volume.array > 0).astype(np.uint8)
    written = write_volume(tmp_path / f"case_7{output_suffix(folder)}", labels, volume.geometry)
    back = read_volume(written)
    assert np.array_equal(back.array, labels)
    assert back.geometry.close_to(volume.geometry)


def test_two_series_in_one_folder_are_refused_naming_both(tmp_path):
    folder = write_series(tmp_path / "mixed", scan(), series="1")
    write_series(folder, scan((3, 6, 7)), series="2")
    with pytest.raises(DataError, match="2 DICOM series") as caught:
        read_volume(folder)
    assert f"{ROOT_UID}.1" in caught.value.problems[0] and f"{ROOT_UID}.2" in caught.value.problems[0]


def test_a_folder_of_broken_dcm_files_names_the_folder(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError, match="no DICOM series") as caught:
        read_volume(folder)
    assert str(folder) in caught.value.problems[0]

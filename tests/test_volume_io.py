"""Volume reader-writers: geometry kept exactly (checked by a second library), 2D files as depth 1, and
every bad volume refused with a one-line error naming the file, nothing half-written."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from gmseg.data import readers
from gmseg.data.readers import (
    PLANAR,
    VOLUME_SUFFIXES,
    Geometry,
    is_volume_file,
    read_volume,
    split_name,
    write_volume,
)
from gmseg.errors import DataError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def oblique_geometry() -> Geometry:
    """Anisotropic (3 x 0.7 x 0.9 mm), rotated about two axes, off-centre: no sign or axis slip can hide."""
    a, b = np.deg2rad(30.0), np.deg2rad(-20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return Geometry((3.0, 0.7, 0.9), (12.5, -40.25, 7.0), tuple((rz @ rx).ravel()))


def volume(dtype=np.int16, shape=(5, 11, 13)) -> np.ndarray:
    """Values that differ along every axis, so a transposed or flipped read cannot pass."""
    z, y, x = np.indices(shape)
    return (z * 1000 + y * 30 + x).astype(dtype)


def expected_affine(geometry: Geometry) -> np.ndarray:
    """The RAS affine nibabel must report for an ITK (LPS) geometry: index (i, j, k) = array (x, y, z)."""
    direction = np.asarray(geometry.direction).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(geometry.spacing[::-1])
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(geometry.origin)
    return affine


def assert_same_geometry(actual: Geometry, expected: Geometry) -> None:
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=1e-5)
    np.testing.assert_allclose(actual.origin, expected.origin, atol=1e-4)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=1e-5)


# --------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_round_trip_keeps_shape_values_and_geometry(tmp_path: Path, ending: str, dtype) -> None:
    geometry = oblique_geometry()
    data = volume(dtype)
    path = write_volume(tmp_path / f"case{ending}", data, geometry)
    back = read_volume(path)
    assert back.is_3d and back.path == path and back.array.dtype == data.dtype
    np.testing.assert_array_equal(back.array, data)
    assert_same_geometry(back.geometry, geometry)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_nibabel_sees_what_gmseg_wrote_and_gmseg_reads_what_nibabel_wrote(tmp_path: Path, ending: str) -> None:
    geometry = oblique_geometry()
    data = volume(np.int16)
    written = write_volume(tmp_path / f"ours{ending}", data, geometry)
    theirs = nib.load(str(written))
    np.testing.assert_allclose(theirs.affine, expected_affine(geometry), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), data.transpose(2, 1, 0))
    # Reverse: nibabel writes an oblique RAS affine; gmseg must read the geometry it implies.
    path = tmp_path / f"nib{ending}"
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), expected_affine(geometry)), str(path))
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, data)
    assert_same_geometry(back.geometry, geometry)


def _nrrd_header(path: Path) -> dict[str, str]:
    fields = {}
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("ascii", "replace").strip()
            if not line:
                break
            if ": " in line:
                key, value = line.split(": ", 1)
                fields[key] = value
    return fields


def test_nrrd_header_says_the_geometry_in_its_own_words(tmp_path: Path) -> None:
    """NRRD's plain-text header, parsed here by hand, is the second reader: space directions are columns of
    direction x spacing per index axis (x, y, z) in LPS."""
    geometry = oblique_geometry()
    path = write_volume(tmp_path / "case.nrrd", volume(np.uint8), geometry)
    header = _nrrd_header(path)
    assert header["space"] == "left-posterior-superior"
    assert header["sizes"].split() == ["13", "11", "5"]
    vectors = [[float(v) for v in g.split(",")] for g in re.findall(r"\(([^)]*)\)", header["space directions"])]
    direction = np.asarray(geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(np.array(vectors).T, direction @ np.diag(geometry.spacing[::-1]), atol=1e-5)
    origin = [float(v) for v in re.findall(r"\(([^)]*)\)", header["space origin"])[0].split(",")]
    np.testing.assert_allclose(origin, geometry.origin, atol=1e-5)


def test_a_label_written_on_an_images_geometry_lands_on_the_image(tmp_path: Path) -> None:
    image = write_volume(tmp_path / "img.nii.gz", volume(np.float32), oblique_geometry())
    read = read_volume(image)
    labels = (read.array > 3000).astype(np.uint8)
    out = write_volume(tmp_path / "seg.nii.gz", labels, read.geometry)
    np.testing.assert_allclose(nib.load(str(out)).affine, nib.load(str(image)).affine, atol=1e-5)
    assert read_volume(out).array.dtype == np.uint8


def test_the_hippocampus_volumes_read_with_their_geometry() -> None:
    from conftest import SHARED, need

    folder = need(SHARED / "data" / "msd-hippocampus")
    path = folder / "imagesTr" / "hippocampus_001.nii.gz"
    read = read_volume(path)
    theirs = nib.load(str(path))
    assert read.is_3d and read.array.shape == theirs.shape[::-1]
    np.testing.assert_allclose(expected_affine(read.geometry), theirs.affine, atol=1e-4)
    np.testing.assert_array_equal(read.array, np.asarray(theirs.dataobj).transpose(2, 1, 0))


# ----------------------------------------------------------------------------------- 2D as depth 1


def test_2d_files_are_volumes_of_depth_one(tmp_path: Path) -> None:
    gray = np.arange(12 * 9, dtype=np.uint8).reshape(12, 9)
    Image.fromarray(gray).save(tmp_path / "g.png")
    read = read_volume(tmp_path / "g.png")
    assert read.array.shape == (1, 12, 9) and read.geometry == PLANAR and not read.is_3d
    np.testing.assert_array_equal(read.array[0], gray)
    rgb = np.dstack([gray, gray[::-1], gray // 2])
    write_volume(tmp_path / "c.png", rgb[None], PLANAR)
    np.testing.assert_array_equal(read_volume(tmp_path / "c.png").array, rgb[None])
    for shape in ((2, 4, 4), (4, 4), (2, 4, 4, 3)):
        with pytest.raises(ValueError, match="holds one plane"):
            write_volume(tmp_path / "deep.png", np.zeros(shape, np.uint8), PLANAR)
    assert not (tmp_path / "deep.png").exists()


def test_a_2d_nifti_is_depth_one_and_not_3d(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    image = sitk.GetImageFromArray(np.arange(20, dtype=np.int16).reshape(4, 5))
    image.SetSpacing((0.5, 0.8))
    sitk.WriteImage(image, str(path))
    read = read_volume(path)
    assert read.array.shape == (1, 4, 5) and not read.is_3d
    np.testing.assert_allclose(read.geometry.spacing, (1.0, 0.8, 0.5), rtol=1e-6)


def test_volume_endings_and_names() -> None:
    assert VOLUME_SUFFIXES == (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
    assert is_volume_file("a/case.NII.GZ") and is_volume_file("x.nrrd") and not is_volume_file("x.png")
    assert not is_volume_file("._case.nii.gz")  # macOS companions of the MSD archives
    assert split_name("hippocampus_001.nii.gz") == ("hippocampus_001", ".nii.gz")
    assert [f.name for f in readers.REGISTRY if f.is_3d] == ["NIfTI", "NRRD", "MetaImage"]


# ------------------------------------------------------------------------------------------ bad input


def _one_line_error(info: pytest.ExceptionInfo, path: Path, words: str) -> None:
    message = str(info.value)
    assert str(path) in message.splitlines()[0] and words in message.splitlines()[0]


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_volumes_are_refused(tmp_path: Path, ending: str, keep: float) -> None:
    """A cut .nii.gz (listed) and its variants; ITK alone reads a cut NIfTI with zeros for the lost voxels."""
    whole = write_volume(tmp_path / f"whole{ending}", np.random.default_rng(0).normal(size=(6, 40, 50)), PLANAR)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{ending}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError) as info:
        read_volume(cut)
    assert str(cut) in str(info.value).splitlines()[0]


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused(tmp_path: Path, ending: str, bad: float) -> None:
    data = np.ones((3, 4, 5), np.float32)
    data[2, 1, 3] = bad
    path = write_volume(tmp_path / f"v{ending}", data, PLANAR)
    with pytest.raises(DataError) as info:
        read_volume(path)
    _one_line_error(info, path, "non-finite")
    assert "(2, 1, 3)" in str(info.value)


def test_an_empty_volume_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((0, 5, 6), np.float32), np.eye(4)), str(path))
    with pytest.raises(DataError) as info:
        read_volume(path)
    _one_line_error(info, path, "empty volume")


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_a_4d_image_is_refused_where_3d_is_expected(tmp_path: Path, ending: str) -> None:
    path = tmp_path / f"t2_adc{ending}"
    sitk.WriteImage(sitk.Image([4, 5, 6, 2], sitk.sitkFloat32), str(path))
    with pytest.raises(DataError) as info:
        read_volume(path)
    _one_line_error(info, path, "4D image where a 3D one is expected")


def test_garbage_and_missing_files_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "noise.nrrd"
    garbage.write_bytes(b"\x00" * 100)
    for path in (garbage, tmp_path / "absent.nii.gz"):
        with pytest.raises(DataError) as info:
            read_volume(path)
        assert str(path) in str(info.value).splitlines()[0]
    with pytest.raises(DataError, match="unsupported file type"):
        read_volume(tmp_path / "scan.dcm")


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out" / "seg.nii.gz"
    write_volume(target, np.zeros((2, 3, 4), np.uint8), PLANAR)
    before = target.read_bytes()

    def broken(image, name, useCompression=False):  # noqa: N803 - SimpleITK's keyword
        Path(name).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(target, np.ones((2, 3, 4), np.uint8), PLANAR)
    assert target.read_bytes() == before  # the old file untouched
    assert [p.name for p in target.parent.iterdir()] == ["seg.nii.gz"]  # no temporary left


def test_an_outputs_ending_follows_its_input() -> None:
    assert readers.output_suffix("in/case.NRRD") == ".NRRD" and readers.output_suffix("a.nii.gz") == ".nii.gz"
    assert readers.output_suffix("photo.jpg") == readers.OUTPUT_2D_SUFFIX == readers.output_suffix("x.tif")
    assert readers.find_format("m" + readers.OUTPUT_2D_SUFFIX).lossy is False

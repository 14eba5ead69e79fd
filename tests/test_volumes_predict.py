"""Prediction on volumes: label volumes written back with exactly their input's shape and geometry (checked
with a second library), the slicing axis used, probabilities, batches, and the file rule."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gmseg.data.normalization import VolumeInput
from gmseg.data.readers import read_volume
from gmseg.errors import GmsegError
from gmseg.labels import LabelSet
from gmseg.models.unet import UNet, unet_arguments
from gmseg.predict import predict_files
from gmseg.volume_predict import predict_volume

SPACING_XYZ = (0.7, 0.9, 3.5)  # SimpleITK order: x, y, z; the thick axis is z (array axis 0)
ORIGIN = (12.5, -40.25, 7.0)


def oblique_direction() -> tuple[float, ...]:
    """A rotation about two axes: no axis is aligned with the world, so a sign or order error shows."""
    a, b = 0.4, -0.25
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel())


def write_input(path: Path, array: np.ndarray) -> Path:
    """Written by SimpleITK directly, so the reader under test is not also the writer of its input."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN)
    image.SetDirection(oblique_direction())
    sitk.WriteImage(image, str(path))
    return path


def tiny_unet(labels: LabelSet | None = None, size: int = 32) -> UNet:
    torch.manual_seed(0)
    model = UNet(unet_arguments((4, 8), size, 0, *([labels] if labels else [])))
    model.record_volume_input(VolumeInput(scheme="zscore", modality="MRI"))
    return model


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    write_input(folder / "case_a.nii.gz", rng.normal(300, 50, (5, 22, 27)).astype(np.float32))
    write_input(folder / "case_b.nrrd", rng.integers(0, 900, (4, 19, 23)).astype(np.int16))
    return folder


def same_geometry_sitk(a: Path, b: Path) -> None:
    x, y = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert x.GetSize() == y.GetSize()
    np.testing.assert_allclose(x.GetSpacing(), y.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(x.GetOrigin(), y.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(x.GetDirection(), y.GetDirection(), atol=1e-6)


def test_label_volumes_keep_shape_and_geometry_in_their_format(volumes, tmp_path):
    out = tmp_path / "out"
    report = predict_files(tiny_unet(), volumes, out, device="cpu", progress=False)
    assert report.ok and sorted(report.written) == ["case_a", "case_b"]
    for name in ("case_a.nii.gz", "case_b.nrrd"):
        written, source = out / name, volumes / name
        same_geometry_sitk(written, source)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(written)))
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        assert label.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(source))).shape
    # A second library for NIfTI: nibabel's affine (voxel -> RAS world) of output and input agree.
    np.testing.assert_allclose(
        nib.load(out / "case_a.nii.gz").affine, nib.load(volumes / "case_a.nii.gz").affine, atol=1e-5
    )
    assert nib.load(out / "case_a.nii.gz").shape == nib.load(volumes / "case_a.nii.gz").shape


def test_class_probabilities_one_volume_per_class(volumes, tmp_path):
    labels = LabelSet(("background", "anterior", "posterior"), (0, 1, 2))
    out = tmp_path / "out"
    report = predict_files(
        tiny_unet(labels), [volumes / "case_a.nii.gz"], out, save_prob=True, device="cpu", progress=False
    )
    assert report.ok
    probabilities = [read_volume(out / f"case_a.prob.{name}.nii.gz").array for name in labels.names]
    total = np.sum(probabilities, axis=0)
    np.testing.assert_allclose(total, 1.0, atol=1e-4)  # softmax, resized per class with the same weights
    label = read_volume(out / "case_a.nii.gz").array
    np.testing.assert_array_equal(label, np.asarray(labels.values)[np.argmax(probabilities, axis=0)])
    same_geometry_sitk(out / "case_a.prob.posterior.nii.gz", volumes / "case_a.nii.gz")


def test_slices_along_the_rule_or_the_override_in_batches(volumes):
    """The fake model predicts foreground where a slice is brighter than the volume's mean (z-score > 0), so
    the label volume is known whatever the axis; it records how many slices each batch held."""
    z, y, x = np.meshgrid(np.arange(5), np.arange(22), np.arange(27), indexing="ij")
    smooth = (np.sin(x / 4.0) + np.cos(y / 5.0) + z / 5.0).astype(np.float32)  # (5, 22, 27), thick z
    volume = read_volume(write_input(volumes / "smooth.nii.gz", smooth))
    seen: list[int] = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return (batch[:, :1] > 0).float()

    values, _ = predict_volume(predict, volume, image_size=32, batch_size=4, record=VolumeInput())
    assert seen == [4, 1]  # 5 slices along z (axis 0) in batches of 4
    expected = (volume.array > volume.array.mean()).astype(np.uint8)
    assert (values == expected).mean() > 0.97  # resizing to 32 and back blurs single voxels only
    seen.clear()
    values, _ = predict_volume(predict, volume, image_size=32, batch_size=100, record=VolumeInput(slice_axis=2))
    assert seen == [27] and values.shape == volume.array.shape


def test_outputs_follow_the_file_rule(volumes, tmp_path):
    out = tmp_path / "out"
    model = tiny_unet()
    predict_files(model, volumes, out, device="cpu", progress=False)
    with pytest.raises(GmsegError, match="already exist"):
        predict_files(model, volumes, out, device="cpu", progress=False)
    assert predict_files(model, volumes, out, device="cpu", progress=False, overwrite=True).ok
    with pytest.raises(GmsegError, match="holds the input"):
        predict_files(model, volumes, volumes, device="cpu", progress=False, overwrite=True)
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    with pytest.raises(GmsegError, match="no volume file"):
        predict_files(model, [volumes / "case_a.nii.gz", png], tmp_path / "o2", device="cpu", progress=False)

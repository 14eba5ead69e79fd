"""The slicing rule, its override, the share of empty slices, and the intensity normalisation of volumes."""

from __future__ import annotations

import numpy as np
import pytest

from gmseg.data.normalization import VolumeInput, fit_volume_input, scheme_for, to_pixels
from gmseg.data.slicing import plan_slices, put_slice, slice_axis, take_slice
from gmseg.errors import ConfigError


@pytest.mark.parametrize(
    "spacing, axis",
    [
        ((5.0, 0.8, 0.8), 0),  # thick z: slice along z, the 0.8 x 0.8 plane is seen
        ((0.8, 0.8, 5.0), 2),  # thick x (a sagittal acquisition stored x-last)
        ((0.7, 3.0, 0.7), 1),
        ((1.0, 1.0, 1.0), 0),  # isotropic: ties go to the first array axis
        ((1.0, 2.0, 2.0), 1),  # tie between y and x: y, the first of them
    ],
)
def test_axis_of_largest_spacing_ties_to_the_first(spacing, axis):
    assert slice_axis(spacing) == axis


def test_override_wins_and_is_checked():
    assert slice_axis((5.0, 1.0, 1.0), override=2) == 2
    with pytest.raises(ConfigError, match="slice_axis"):
        slice_axis((1.0, 1.0, 1.0), override=3)
    with pytest.raises(ConfigError, match="spacing"):
        slice_axis((1.0, 0.0, 1.0))


def test_take_and_put_slice_are_inverse_along_every_axis():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    for axis in range(3):
        out = np.zeros_like(volume)
        for index in range(volume.shape[axis]):
            piece = take_slice(volume, axis, index)
            assert piece.shape == tuple(s for a, s in enumerate(volume.shape) if a != axis)
            put_slice(out, axis, index, piece)
        np.testing.assert_array_equal(out, volume)


def test_empty_share_is_controlled_and_seeded():
    # 10 foreground slices and 30 empty ones over two cases.
    counts = {"a": np.array([0] * 15 + [3] * 5), "b": np.array([2] * 5 + [0] * 15)}
    none = plan_slices(counts, 0.0, seed=0)
    assert len(none) == 10 and all(ref.foreground for ref in none)
    quarter = plan_slices(counts, 0.2, seed=0)  # 10 full -> round(10 * 0.2 / 0.8) = 2 empty (2 of 12)
    assert sum(not r.foreground for r in quarter) == 2 and len(quarter) == 12
    half = plan_slices(counts, 0.5, seed=1)
    assert sum(not r.foreground for r in half) == 10
    assert plan_slices(counts, 0.5, seed=1) == half  # seeded
    assert len(plan_slices(counts, 0.9, seed=0)) == 40  # wants 90 empty, only 30 exist: all of them
    assert len(plan_slices(counts, 1.0, seed=0)) == 40
    assert quarter[0].name == "a_s015"
    with pytest.raises(ConfigError, match="empty_slice_fraction"):
        plan_slices(counts, 1.5, seed=0)


def test_zscore_per_volume_for_mri_and_mapping_to_pixels():
    assert scheme_for("MRI") == "zscore" and scheme_for("T2") == "zscore" and scheme_for("ct") == "ct"
    assert scheme_for("rgb", is_3d=False) == "rgb"
    volume = np.array([[[10.0, 20.0], [30.0, 40.0]]], dtype=np.float32)  # mean 25, std sqrt(125)
    record = fit_volume_input("MRI", [])
    z = record.normalize(volume)
    np.testing.assert_allclose(z.ravel(), (np.array([10, 20, 30, 40]) - 25) / np.sqrt(125), rtol=1e-6)
    # A second volume of another scale gets the same z-scores: per-volume statistics.
    np.testing.assert_allclose(record.normalize(volume * 7 + 100), z, rtol=1e-5, atol=1e-6)
    # z -3 -> 0, 0 -> 127.5, +3 -> 255, beyond clipped.
    np.testing.assert_allclose(to_pixels(np.array([-9.0, -3.0, 0.0, 1.5, 3.0, 9.0])), [0, 0, 127.5, 191.25, 255, 255])


def test_ct_uses_the_datasets_foreground_statistics():
    # Foreground intensities 0..999 (1000 voxels) in one case; background 5000 must not count.
    image = np.full((10, 10, 20), 5000.0)
    label = np.zeros(image.shape, np.uint8)
    image.flat[:1000] = np.arange(1000)
    label.flat[:1000] = 1
    record = fit_volume_input("CT", [(image, label)])
    assert record.scheme == "ct"
    assert record.clip == pytest.approx((np.percentile(np.arange(1000), 0.5), np.percentile(np.arange(1000), 99.5)))
    assert record.mean == pytest.approx(499.5) and record.std == pytest.approx(np.arange(1000).std())
    z = record.normalize(np.array([[[-100.0, 499.5, 5000.0]]]))
    lo, hi = record.clip
    np.testing.assert_allclose(z.ravel(), [(lo - 499.5) / record.std, 0.0, (hi - 499.5) / record.std], rtol=1e-5)
    # Recorded and read back exactly (the model folder's config.json).
    assert VolumeInput.from_dict(record.to_dict()) == record
    with pytest.raises(ConfigError, match="foreground"):
        fit_volume_input("CT", [(image, np.zeros_like(label))])
    with pytest.raises(ConfigError, match="unknown keys"):
        VolumeInput.from_dict({"scheme": "zscore", "bogus": 1})

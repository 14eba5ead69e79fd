"""LabelSet: the binary default, dataset.json labels, and the two conversions (mask -> target, probability -> mask)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gmseg.errors import ConfigError
from gmseg.labels import BINARY, DEFAULT_THRESHOLD, LabelSet


def test_binary_is_the_default() -> None:
    assert LabelSet() == BINARY == LabelSet.binary()
    assert BINARY.names == ("background", "foreground") and BINARY.values == (0, 1)
    assert BINARY.is_binary and BINARY.num_classes == 2 and BINARY.foreground == ("foreground",)
    assert BINARY.to_labels() == {"background": 0, "foreground": 1}
    assert DEFAULT_THRESHOLD == 0.5


def test_mask_to_target_numpy_and_torch() -> None:
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    target = BINARY.to_target(mask)
    assert target.dtype == np.float32 and np.array_equal(target, mask.astype(np.float32))
    # what a user transform may hand back: 0/255, interpolated values; exactly 0.5 is background
    soft = torch.tensor([[[0.0, 0.5, 0.51, 1.0, 255.0]]])
    out = BINARY.to_target(soft)
    assert out.dtype == torch.float32 and out.shape == soft.shape
    assert out.tolist() == [[[0.0, 0.0, 1.0, 1.0, 1.0]]]
    # bit for bit what the dataset did before the seam
    t = torch.rand(1, 8, 8)
    assert torch.equal(BINARY.to_target(t), (t > 0.5).to(torch.float32))


def test_probability_to_mask_threshold() -> None:
    prob = np.array([0.0, 0.3, 0.5, 0.500001, 0.9], np.float32)
    assert BINARY.to_mask(prob).tolist() == [0, 0, 0, 1, 1]
    assert BINARY.to_mask(prob, 0.25).tolist() == [0, 1, 1, 1, 1]
    assert BINARY.to_mask(prob).dtype == np.uint8
    t = torch.rand(2, 1, 8, 8)
    assert torch.equal(BINARY.to_mask(t, 0.4).float(), (t > 0.4).float())
    assert BINARY.to_mask(t).dtype == torch.uint8


def test_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 2, (16, 16)).astype(np.uint8)
    assert np.array_equal(BINARY.to_mask(BINARY.to_target(mask)), mask)
    prob = rng.random((16, 16)).astype(np.float32)
    predicted = BINARY.to_mask(prob)
    assert np.array_equal(BINARY.to_target(predicted), (prob > 0.5).astype(np.float32))
    assert np.array_equal(BINARY.to_mask(BINARY.to_target(predicted)), predicted)


def test_from_dataset_json(tmp_path: Path) -> None:
    v2 = {"labels": {"background": 0, "lesion": 1}}
    assert LabelSet.from_dataset_json(v2) == LabelSet.binary("lesion")
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"1": "polyp", "0": "background"}}))  # nnU-Net v1, any order
    assert LabelSet.from_dataset_json(path) == LabelSet(("background", "polyp"), (0, 1))
    path.write_text(json.dumps({"name": "no labels"}))
    assert LabelSet.from_dataset_json(path) == BINARY
    three = LabelSet.from_labels({"background": 0, "gland": 1, "lumen": 2})
    assert three.num_classes == 3 and not three.is_binary
    assert LabelSet.from_dataset_json({"labels": three.to_labels()}) == three


def test_multi_class_target_and_mask_numpy_and_torch() -> None:
    # Values need not be contiguous: the target holds class indices, the mask class values again.
    three = LabelSet(("background", "benign", "malignant"), (0, 1, 5))
    mask = np.array([[0, 1], [5, 5]], np.uint8)
    target = three.to_target(mask)
    assert target.dtype == np.float32 and target.tolist() == [[0, 1], [2, 2]]
    assert torch.equal(three.to_target(torch.from_numpy(mask)), torch.from_numpy(target))
    probability = np.eye(3, dtype=np.float32)[target.astype(int)].transpose(2, 0, 1)  # (K, H, W) one-hot
    assert np.array_equal(three.to_mask(probability), mask)
    assert torch.equal(three.to_mask(torch.from_numpy(probability)[None])[0], torch.from_numpy(mask))
    with pytest.raises(ConfigError, match=r"3 class probabilities"):
        three.to_mask(np.zeros((2, 2, 2), np.float32))
    assert three.colours.shape == (3, 3) and three.colours[0].tolist() == [0, 0, 0]


def test_undeclared_label_value_names_the_file_and_values() -> None:
    three = LabelSet.from_labels({"background": 0, "gland": 1, "lumen": 2})
    with pytest.raises(ConfigError, match=r"masks/case7.png: label value\(s\) \[3, 9\] are not declared"):
        three.check_values(np.array([0, 3, 9, 1]), "masks/case7.png")
    with pytest.raises(ConfigError, match=r"\[4\]"):
        three.to_target(np.array([[0, 4]], np.uint8))


@pytest.mark.parametrize(
    "labels",
    [
        {"lesion": 1},  # no background
        {"background": 0, "a": 1, "b": 1},  # duplicate values
        {"background": 1, "lesion": 2},  # background not 0
        {"background": 0, "lesion": [1, 2]},  # region labels
        {},
    ],
)
def test_bad_labels_are_config_errors(labels: dict) -> None:
    with pytest.raises(ConfigError):
        LabelSet.from_labels(labels)

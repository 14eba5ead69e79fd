"""Shared fixtures: paths into ../shared (skipped with a reason when absent), tiny random autoencoders and a
tiny MSD task of volumes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
PARITY = SHARED / "fixtures" / "official-parity"
TAESD = SHARED / "weights" / "taesd"
BUSI = SHARED / "data" / "busi"
KVASIR5 = SHARED / "data" / "kvasir-seg-5"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest deviation over the largest reference value: how the parity fixtures are compared, because
    float32 on another CPU (AVX2 against AVX-512 kernels) moves single elements by ~1e-5 of the range."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def need(path: Path) -> Path:
    """Skip (with the reason) when a ../shared resource is absent, e.g. outside CI."""
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the project's ../shared folder")
    return path


@pytest.fixture
def parity() -> Path:
    return need(PARITY)


@pytest.fixture
def taesd_dir() -> Path:
    return need(TAESD)


def make_tiny_kl(sample_size: int = 32):
    """A random AutoencoderKL small enough to train on a CPU in seconds (4 latent channels, /8)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory) -> Path:
    """A tiny random AutoencoderKL written as a diffusers folder."""
    folder = tmp_path_factory.mktemp("tiny_vae")
    make_tiny_kl().save_pretrained(folder)
    return folder


def tiny_gms_config(size: int = 32):
    """The small GMS of the file-rule, concurrency and safety tests: a 16-wide mapping on the tiny autoencoder."""
    from gmseg.models import GMSConfig

    return GMSConfig(mapping={"in_channels": 4, "out_channels": 4, "ch": 16, "ch_mult": [1, 2, 2]}, image_size=size)


@pytest.fixture(scope="module")
def model_dir(tiny_vae_dir, tmp_path_factory) -> Path:
    """A seeded GMS model folder (:func:`tiny_gms_config`), made once per test module."""
    from gmseg.first_stage import load_first_stage
    from gmseg.models import GMS

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "model"
    GMS(tiny_gms_config(), first_stage_module=load_first_stage(tiny_vae_dir)).save_pretrained(folder)
    return folder


def make_shifted_kl():
    """A random 16-channel AutoencoderKL with a scale and a shift, as the SD3 / FLUX VAEs have."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
        shift_factor=0.1,
    )


def offline_hub_snapshot(tmp_path: Path, monkeypatch, repo_id: str) -> Path:
    """An empty snapshot folder of ``repo_id`` in a Hub cache laid out as huggingface_hub writes it, with
    the Hub switched to offline and pointed at that cache: what is written there is what the real Hub
    code path finds (this machine cannot reach the Hub; users' machines run the same code online)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return snapshot


def write_tiny_volume(path: Path, array: np.ndarray) -> None:
    """A NIfTI volume whose z spacing (3 mm) is the largest: it is sliced along array axis 0."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(image, str(path))


def write_msd_task(
    root: Path,
    cases: Sequence[tuple[np.ndarray, np.ndarray]],
    write: Callable[[Path, np.ndarray], None],
    labels: dict[str, str],
    *,
    name: str = "Tiny",
    modality: str = "MRI",
    unlabelled: Sequence[np.ndarray] = (),
) -> Path:
    """An MSD task folder as the Decathlon ships one (imagesTr, labelsTr, imagesTs, dataset.json) from
    (image, label) arrays, named vol_000...; ``write`` writes one volume with the test's geometry."""
    for folder in ("imagesTr", "labelsTr") + (("imagesTs",) if unlabelled else ()):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training, test = [], []
    for i, (image, label) in enumerate(cases):
        file = f"vol_{i:03d}.nii.gz"
        write(root / "imagesTr" / file, image)
        write(root / "labelsTr" / file, label)
        training.append({"image": f"./imagesTr/{file}", "label": f"./labelsTr/{file}"})
    for i, image in enumerate(unlabelled):
        file = f"vol_{100 + i:03d}.nii.gz"
        write(root / "imagesTs" / file, image)
        test.append(f"./imagesTs/{file}")
    meta = {
        "name": name,
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": labels,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_tiny_msd(root: Path, n: int = 4) -> Path:
    """A tiny MSD task (labels background / anterior / posterior) of (6, 20, 16) MRI volumes whose slices
    differ, each case its structures in another place."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        label = np.zeros((6, 20, 16), np.uint8)
        label[1:5, 3 + i : 9 + i, 2:7] = 1
        label[2:5, 12:18, 8 + i % 3 : 14] = 2
        image = (label * 40.0 + np.arange(6)[:, None, None] * 7 + rng.normal(0, 8, label.shape)).astype(np.float32)
        cases.append((image, label))
    return write_msd_task(root, cases, write_tiny_volume, {"0": "background", "1": "anterior", "2": "posterior"})

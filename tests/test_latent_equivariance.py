"""bench/latent_equivariance.py: does turning latents equal encoding turned images?"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import latent_equivariance  # noqa: E402
from conftest import TAESD, need  # noqa: E402
from gmseg.synthetic import make_synthetic_dataset  # noqa: E402


def test_the_seven_turns_are_distinct_and_not_the_identity():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    turned = [latent_equivariance.turn(x, k, flip) for _, k, flip in latent_equivariance.turns()]
    assert len(turned) == 7
    assert all(not torch.equal(t, x) for t in turned)
    assert len({tuple(t.flatten().tolist()) for t in turned}) == 7


def test_an_equivariant_encoder_scores_zero_and_an_oriented_one_does_not():
    batch = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pooled = latent_equivariance.relative_errors(lambda x: torch.nn.functional.avg_pool2d(x, 4), batch)
    assert max(pooled.values()) < 1e-6
    # A horizontal-gradient filter: turning the image turns the gradient direction, not just the map.
    kernel = torch.tensor([[-1.0, 0.0, 1.0]]).view(1, 1, 1, 3).repeat(1, 3, 1, 1)
    oriented = latent_equivariance.relative_errors(
        lambda x: torch.nn.functional.conv2d(x, kernel, padding=(0, 1)), batch
    )
    assert oriented["rot180"] > 0.5 and oriented["rot90"] > 0.5


def test_command_writes_figures_for_images_and_masks(tmp_path):
    need(TAESD)
    data = make_synthetic_dataset(tmp_path / "data", n_train=3, n_test=1, size=64, seed=2)
    out = tmp_path / "eq.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "latent_equivariance.py"),
            "--vae",
            str(TAESD),
            "--data",
            str(data),
            "--count",
            "2",
            "--size",
            "64",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 2
    for kind in ("image", "mask"):
        errors = result["relative_error"][kind]
        assert set(errors) == {name for name, _, _ in latent_equivariance.turns()}
        assert all(value > 0 for value in errors.values())
    assert "rot90" in done.stdout

"""``gmseg demo``: the whole method in a few minutes on a laptop CPU.

Generates ultrasound-like images with lesion masks, trains GMS with the TAESD first stage, predicts the
held-out images, scores them and writes a visual report. The schedule spends most epochs on the latent
loss with cached encoded views (cheap: no autoencoder in the loop) and the last ones on the paper's full
loss, which is what makes a CPU run of a few minutes reach a useful Dice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig, check_ranges
from .first_stage import TAESD_HUB_ID

DEMO_IMAGE_SIZE = 128


def demo_config(data_dir: Path, runs_dir: Path, vae: str, vae_config: str | None, quick: bool) -> Config:
    epochs, latent_epochs = (4, 3) if quick else (84, 80)
    config = Config(
        name="demo",
        data=DataConfig(root=str(data_dir), image_size=DEMO_IMAGE_SIZE, val_fraction=0.15),
        model=ModelConfig(vae=vae, vae_config=vae_config),
        loss=LossConfig(),
        train=TrainConfig(
            epochs=epochs,
            batch_size=8,
            lr=2e-3,
            warmup_epochs=1,
            latent_epochs=latent_epochs,
            latent_views=2 if quick else 4,
            seed=0,
            output_dir=str(runs_dir),
        ),
    )
    check_ranges(config)
    return config


def run_demo(
    out_dir: str | os.PathLike = "gmseg-demo",
    vae: str | None = None,
    vae_config: str | None = None,
    quick: bool = False,
    progress: bool = True,
) -> dict:
    """Run the demo; returns the test summary (also written to ``<out>/test/summary.json``)."""
    from .evaluate import format_summary
    from .first_stage import load_first_stage
    from .synthetic import make_synthetic_dataset
    from .testing import run_test
    from .train import Trainer
    from .visualize import plot_training_curves

    out = Path(out_dir)
    vae = vae or TAESD_HUB_ID
    started = time.time()
    load_first_stage(vae, vae_config)  # fail in the first second, with what to pass, if it cannot load
    n_train, n_test = (24, 8) if quick else (160, 40)
    data_dir = make_synthetic_dataset(out / "data", n_train=n_train, n_test=n_test, size=DEMO_IMAGE_SIZE, seed=0)
    print(f"[1/4] synthetic dataset: {n_train} training and {n_test} test images in {data_dir}")

    config = demo_config(data_dir, out / "runs", vae, vae_config, quick)
    run_dir = Trainer(config, progress=progress).fit()
    print(f"[2/4] trained in {time.time() - started:.0f} s: {run_dir}")

    result = run_test(run_dir / "checkpoints" / "best", data_dir, out / "test", progress=progress)
    curves = plot_training_curves(run_dir)
    print("[3/4] test set:")
    print(format_summary(result.summary))
    summary = {
        "test_dice": result.summary["metrics"]["dice"]["mean"],
        "test_iou": result.summary["metrics"]["iou"]["mean"],
        "n_test": n_test,
        "seconds": round(time.time() - started, 1),
        "run_dir": str(run_dir),
        "report": str(out / "test" / "report.png"),
        "curves": str(curves),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[4/4] report: {summary['report']}  curves: {curves}  total {summary['seconds']} s")
    return summary

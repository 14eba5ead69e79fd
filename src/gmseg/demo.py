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

from .config import Config, config_from_dict
from .first_stage import TAESD_HUB_ID
from .outputs import OutputError, OutputGuard

DEMO_IMAGE_SIZE = 96
#: The demo's budget, in one place (measured in BENCHMARKS.md, "The demo"): many cheap images (one cached
#: view each, turned at random in latent space), 26 latent-only epochs, one full-loss epoch on the cached
#: views with the Dice term at the output; quick: the CI smoke test.
DEMO_IMAGES = {"full": (320, 40), "quick": (24, 8)}  # generated training (incl. validation) and test images
DEMO_SCHEDULE = {"full": (27, 26), "quick": (4, 3)}  # epochs, of which latent-only
#: A wall-clock safety net for training (train.max_minutes), not the demo's expected time: on a machine far
#: slower than the one measured, the demo stops and tests the best epoch so far, saying so.
DEMO_TRAIN_MINUTES = 8.0


def demo_config(data_dir: Path, runs_dir: Path, vae: str, vae_config: str | None, quick: bool) -> Config:
    """Latent-only epochs on cached views (no decoder in the loop), then the full loss on the same views."""
    epochs, latent_epochs = DEMO_SCHEDULE["quick" if quick else "full"]
    return config_from_dict(
        {
            "name": "demo",
            "data": {"root": str(data_dir), "image_size": DEMO_IMAGE_SIZE, "val_fraction": 0.1},
            "model": {"name": "gms", "vae": vae, "vae_config": vae_config},
            "loss": {"dice_levels": ["out"]},
            "train": {
                "epochs": epochs,
                "batch_size": 8,
                "lr": 2e-3,
                "warmup_epochs": 2 if not quick else 1,
                "lr_schedule": "smooth",
                "seed": 0,
                "output_dir": str(runs_dir),
                "max_minutes": DEMO_TRAIN_MINUTES,
            },
            "trainer": {
                "name": "cached_latents",
                "latent_epochs": latent_epochs,
                "latent_views": 1,
                "cached_full_loss": True,
                "full_loss_lr_scale": 0.25,
            },
        }
    )


def run_demo(
    out_dir: str | os.PathLike = "gmseg-demo",
    vae: str | None = None,
    vae_config: str | None = None,
    quick: bool = False,
    progress: bool = True,
) -> dict:
    """Run the demo; returns the test summary (also written to ``<out>/demo_summary.json``).

    ``out`` is claimed for this run and must be new, empty or a previous demo's: the demo replaces only what
    gmseg wrote there (its manifest, :mod:`gmseg.outputs`) and refuses a folder holding anything else.
    """
    out = Path(out_dir)
    vae = vae or TAESD_HUB_ID
    with OutputGuard("demo", replace_own=True) as guard:
        guard.claim(out)
        foreign = guard.foreign_entries(out)
        if foreign:
            raise OutputError(
                f"--out {out} holds {len(foreign)} file(s) or folder(s) that gmseg did not write, e.g. "
                f"{foreign[0]}: the demo never writes over them; choose a new or empty folder."
            )
        guard.plan_folder(out / "data")
        guard.plan(out / "demo_summary.json")
        return _run_demo(guard, out, vae, vae_config, quick, progress)


def _run_demo(guard: OutputGuard, out: Path, vae: str, vae_config: str | None, quick: bool, progress: bool) -> dict:
    """The five stages of :func:`run_demo`, in the folder ``guard`` holds."""
    from .case_reports import REPORT_PICTURE
    from .evaluate import format_summary
    from .first_stage import load_first_stage
    from .synthetic import make_synthetic_dataset
    from .testing import run_test
    from .training import make_trainer
    from .visualize import plot_training_curves

    started = time.time()

    def stage(number: int, text: str) -> None:
        print(f"[{number}/5 {time.time() - started:5.0f} s] {text}", flush=True)

    load_first_stage(vae, vae_config)  # fail in the first seconds, with what to pass, if it cannot load
    stage(1, f"first stage loaded: {vae}")
    n_train, n_test = DEMO_IMAGES["quick" if quick else "full"]
    data_dir = guard.write_folder(
        out / "data",
        lambda folder: make_synthetic_dataset(folder, n_train=n_train, n_test=n_test, size=DEMO_IMAGE_SIZE, seed=0),
    )
    stage(2, f"data generated: {n_train} training and {n_test} test images in {data_dir}")

    config = demo_config(data_dir, guard.make_folder(out / "runs"), vae, vae_config, quick)
    trainer = make_trainer(config, progress=progress)
    stage(
        3,
        f"training {config.train.epochs} epochs ({trainer.options.latent_epochs} latent-only), "
        f"at most {DEMO_TRAIN_MINUTES:g} min",
    )
    run_dir = trainer.fit()
    if trainer.stopped_by_budget:
        print(
            f"      the {DEMO_TRAIN_MINUTES:g}-minute training budget ran out: testing the best epoch so far "
            f"({trainer.state.best_epoch}); this machine is slower than the demo was sized for."
        )

    stage(4, "predicting the held-out test images")
    test_dir = guard.make_folder(out / "test")  # a new folder, or the previous demo's (checked above)
    result = run_test(run_dir / "checkpoints" / "best", data_dir, test_dir, progress=progress, overwrite=True)
    curves = plot_training_curves(run_dir)
    stage(5, "evaluated:")
    print(format_summary(result.summary))
    summary = {
        "test_dice": result.summary["metrics"]["dice"]["mean"],
        "test_iou": result.summary["metrics"]["iou"]["mean"],
        "n_test": n_test,
        "seconds": round(time.time() - started, 1),
        "stopped_by_budget": trainer.stopped_by_budget,
        "run_dir": str(run_dir),
        "report": str(test_dir / REPORT_PICTURE),
        "metrics": str(test_dir / "metrics.csv"),
        "curves": str(curves),
    }
    guard.write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    print(
        f"Test Dice {summary['test_dice']:.3f} in {summary['seconds']:.0f} s. Open:\n"
        f"  report   {summary['report']}\n  metrics  {summary['metrics']}\n  curves   {curves}"
    )
    return summary

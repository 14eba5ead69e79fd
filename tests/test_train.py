"""The training engine: learning, exact resume, atomic checkpoints, NaN stop, multi-process, real data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import BUSI, need
from gmseg.config import config_from_dict
from gmseg.errors import ConfigError
from gmseg.models import load_model
from gmseg.synthetic import make_synthetic_dataset
from gmseg.training import Trainer, TrainingDivergedError, checkpoint_epoch, release_lr_factor, train
from gmseg.training import trainer as train_module


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=12, n_test=2, size=32, seed=1)


VARIANT_KEYS = (
    "latent_epochs",
    "latent_views",
    "cached_full_loss",
    "full_loss_lr_scale",
    "latent_dihedral",
    "dice_fraction",
    "autocast_encoder",
    "fp32_loss",
    "full_loss_fp32",
)


def tiny_config(data: Path, vae: Path, out: Path, **train_options) -> dict:
    """A tiny GMS run; the CPU-budget keys among ``train_options`` select the cached-latents trainer."""
    variant = {key: train_options.pop(key) for key in VARIANT_KEYS if key in train_options}
    trainer = {"name": "cached_latents", **variant} if variant else {"name": "default"}
    return {
        "name": "tiny",
        "trainer": trainer,
        "data": {"root": str(data), "image_size": 32, "val_fraction": 0.25},
        "model": {"vae": str(vae), "ch": 16, "ch_mult": [1, 2, 2]},
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "lr": 5e-3,
            "warmup_epochs": 0,
            "seed": 5,
            "output_dir": str(out),
            **train_options,
        },
    }


def read_log(run_dir: Path) -> list[dict]:
    with (run_dir / "train_log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_release_schedule_matches_the_closed_form():
    factors = [release_lr_factor(e, 5, 1000) for e in range(8)]
    assert factors[:6] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert factors[6] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 995)).item()))
    assert release_lr_factor(999, 5, 1000) < 1e-4


def test_two_phase_schedule_restarts_the_cosine_for_the_full_loss():
    from gmseg.training import schedule_factor

    assert [schedule_factor(e, 5, 100) for e in range(100)] == [release_lr_factor(e, 5, 100) for e in range(100)]
    phase_one = [schedule_factor(e, 2, 10, latent_epochs=8) for e in range(10)]
    assert phase_one[:8] == [release_lr_factor(e, 2, 8) for e in range(8)]
    assert phase_one[8] == 1.0 and phase_one[9] == pytest.approx(0.5)
    # A lower peak for the restart scales the full-loss phase only.
    scaled = [schedule_factor(e, 2, 10, latent_epochs=8, full_loss_scale=0.25) for e in range(10)]
    assert scaled[:8] == phase_one[:8] and scaled[8:] == pytest.approx([0.25, 0.125])


def test_loss_falls_and_run_folder_is_complete(tiny_data, tiny_vae_dir, tmp_path):
    config = config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=6))
    run_dir = train(config, progress=False)
    rows = read_log(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    for name in ("config.yaml", "split.json", "train_log.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    split = json.loads((run_dir / "split.json").read_text())
    assert split["val"] and not set(split["val"]) & set(split["test"]) and not set(split["val"]) & set(split["train"])
    model = load_model(run_dir / "checkpoints" / "best")
    assert model.predict_proba(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert (run_dir / "checkpoints" / "last").is_dir() and not (run_dir / "checkpoints" / "last").is_symlink()
    # The best epoch's per-image validation scores outlive the checkpoints, for paired comparisons of runs.
    with (run_dir / "val_best.csv").open() as handle:
        best = list(csv.DictReader(handle))
    assert sorted(r["name"] for r in best) == sorted(split["val"])
    best_logged = max(float(r["val_dice"]) for r in rows)
    assert np.mean([float(r["dice"]) for r in best]) == pytest.approx(best_logged, abs=1e-9)


def interrupt_after_first_epoch(monkeypatch):
    original = train_module.save_checkpoint

    def save_then_die(model, optimizer, scheduler, state, checkpoints, names, **kwargs):
        folder = original(model, optimizer, scheduler, state, checkpoints, names, **kwargs)
        if state.epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return folder

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)


def assert_resume_matches_uninterrupted(options: dict, tmp_path: Path, monkeypatch) -> list[dict]:
    straight = train(config_from_dict(options), run_dir=tmp_path / "straight", progress=False)
    with monkeypatch.context() as patch:
        interrupt_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            train(config_from_dict(options), run_dir=tmp_path / "interrupted", progress=False)
    assert [r["epoch"] for r in read_log(tmp_path / "interrupted")] == ["1"]
    resumed = train(None, resume=tmp_path / "interrupted", progress=False)

    expected, actual = read_log(straight), read_log(resumed)
    assert len(actual) == len(expected)
    for row, reference in zip(actual[1:], expected[1:]):
        for key in ("loss", "loss_rec", "loss_dice", "val_dice", "lr"):
            assert float(row[key]) == pytest.approx(float(reference[key]), rel=1e-5, abs=1e-7), key
    val_best = [(run / "val_best.csv").read_text().splitlines() for run in (straight, resumed)]
    assert [line.split(",")[0] for line in val_best[0]] == [line.split(",")[0] for line in val_best[1]]
    for x, y in zip(val_best[0][1:], val_best[1][1:]):
        assert float(x.split(",")[1]) == pytest.approx(float(y.split(",")[1]), abs=1e-6)
    a = load_file(str(straight / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6), key
    return actual


def test_resume_continues_exactly(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=2)
    options["data"]["augmentations"] = ["hflip", "vflip", "rot90", "color_jitter", "shift_scale_rotate"]
    assert_resume_matches_uninterrupted(options, tmp_path, monkeypatch)


def test_smooth_schedule_ramps_then_restarts_for_the_full_loss():
    from gmseg.training import SMOOTH_START, smooth_lr_factor, smooth_schedule_factor

    assert smooth_lr_factor(0.0, 2, 10) == pytest.approx(SMOOTH_START)
    assert smooth_lr_factor(1.0, 2, 10) == pytest.approx((1 + SMOOTH_START) / 2)
    assert smooth_lr_factor(2.0, 2, 10) == pytest.approx(1.0)
    assert smooth_lr_factor(6.0, 2, 10) == pytest.approx(0.5)
    assert smooth_lr_factor(10.0, 2, 10) == pytest.approx(0.0, abs=1e-12)
    # Two phases: 8 latent epochs with their own warm-up and cosine, then a one-epoch warm-up again.
    assert smooth_schedule_factor(4.0, 2, 10, latent_epochs=8) == pytest.approx(smooth_lr_factor(4.0, 2, 8))
    assert smooth_schedule_factor(8.0, 2, 10, latent_epochs=8) == pytest.approx(SMOOTH_START)
    assert smooth_schedule_factor(9.0, 2, 10, latent_epochs=8) == pytest.approx(1.0)
    assert smooth_schedule_factor(9.0, 2, 10, latent_epochs=8, full_loss_scale=0.25) == pytest.approx(0.25)
    assert smooth_schedule_factor(4.0, 2, 10, latent_epochs=8, full_loss_scale=0.25) == pytest.approx(
        smooth_lr_factor(4.0, 2, 8)
    )


def test_smooth_two_phase_run_resumes_exactly(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.training import smooth_schedule_factor

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=3)
    options["data"]["augmentations"] = ["hflip", "color_jitter", "shift_scale_rotate"]
    options["train"].update(lr_schedule="smooth", warmup_epochs=1)
    options["trainer"] = {"name": "cached_latents", "latent_epochs": 2, "latent_views": 2, "full_loss_lr_scale": 0.5}
    rows = assert_resume_matches_uninterrupted(options, tmp_path, monkeypatch)
    # Each epoch logs the lr of its first step: the schedule evaluated at the epoch's start; the full-loss
    # epoch restarts at half the peak.
    expected = [5e-3 * smooth_schedule_factor(e, 1, 3, 2, full_loss_scale=0.5) for e in range(3)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected)
    assert float(rows[2]["lr"]) == pytest.approx(0.5 * 5e-3 * smooth_schedule_factor(2, 1, 3, 2))
    assert float(rows[2]["loss_dice"]) > 0 and float(rows[1]["loss_dice"]) == 0


def test_first_latent_view_is_the_unaugmented_image(tiny_data, tiny_vae_dir, tmp_path):
    from gmseg.training import make_dataset, make_trainer

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, latent_epochs=1, latent_views=2)
    options["data"]["augmentations"] = ["hflip", "vflip", "rot90", "shift_scale_rotate"]
    trainer = make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    trainer.setup()
    cache = trainer.build_latent_cache()
    clean = make_dataset(trainer.config, trainer.split["train"], augment=False)
    first = clean[0]
    image_latent, _, mask_latent = trainer.model.encode_pair(first["image"][None] * 2 - 1, first["mask"][None])
    assert torch.allclose(cache["image"][0], image_latent[0], atol=1e-5)
    assert torch.allclose(cache["mask"][0], mask_latent[0], atol=1e-5)
    augmented = cache["image"][len(trainer.train_set) :]
    clean_all = cache["image"][: len(trainer.train_set)]
    assert not torch.allclose(augmented, clean_all, atol=1e-3)  # the second view is augmented


def test_cached_full_loss_trains_on_cached_views_without_the_encoder(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.first_stage import FirstStage

    calls = {"encode": 0}
    original = FirstStage.encode

    def counting(self, image):
        calls["encode"] += 1
        return original(self, image)

    monkeypatch.setattr(FirstStage, "encode", counting)
    options = tiny_config(
        tiny_data, tiny_vae_dir, tmp_path, epochs=3, latent_epochs=1, latent_views=2, cached_full_loss=True
    )
    run_dir = train(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    rows = read_log(run_dir)
    # 9 training names at batch 4: 3 encoder calls per view; 3 validation names: 1 call. Nothing per epoch.
    assert calls["encode"] == 2 * 3 + 1
    assert float(rows[0]["loss_dice"]) == 0
    assert all(float(r["loss_dice"]) > 0 and torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows[1:])


def test_cached_latents_full_loss_epochs_are_the_papers_step_by_default(tiny_data, tiny_vae_dir, tmp_path):
    # With no latent phase and the default options the variant's full-loss epochs must train exactly as the
    # default trainer (GMS.training_loss): the same losses, validation and weights.
    paper = train(
        config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path / "a")),
        run_dir=tmp_path / "a" / "run",
        progress=False,
    )
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path / "b", latent_epochs=0, latent_views=1)
    variant = train(config_from_dict(options), run_dir=tmp_path / "b" / "run", progress=False)
    keys = ("lr", "loss", "loss_rec", "loss_dice", "val_dice")
    for ours, theirs in zip(read_log(variant), read_log(paper), strict=True):
        assert [float(ours[k]) for k in keys] == pytest.approx([float(theirs[k]) for k in keys], rel=1e-6, abs=1e-7)
    assert torch.equal(load_model(variant)(torch.zeros(1, 3, 32, 32)), load_model(paper)(torch.zeros(1, 3, 32, 32)))


def test_dice_fraction_decodes_part_of_each_batch(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.models import GMS

    decoded = []
    original = GMS.latent_to_probability

    def counting(self, latent):
        if torch.is_grad_enabled():  # training decodes with gradients, validation without
            decoded.append(len(latent))
        return original(self, latent)

    monkeypatch.setattr(GMS, "latent_to_probability", counting)
    # 9 training names at batch 4, 2 epochs: fresh augmentations drop the last batch (2 steps an epoch), the
    # cached views keep it (4, 4, 1); half of each batch is decoded, at least one sample, at each of the three
    # Dice levels (decoded as one batch).
    for cached, expected in ((False, [2 * 3, 2 * 3] * 2), (True, [2 * 3, 2 * 3, 1 * 3] * 2)):
        decoded.clear()
        options = tiny_config(
            tiny_data,
            tiny_vae_dir,
            tmp_path / str(cached),
            latent_epochs=0,
            latent_views=1,
            cached_full_loss=cached,
            dice_fraction=0.5,
        )
        rows = read_log(train(config_from_dict(options), run_dir=tmp_path / str(cached) / "run", progress=False))
        assert decoded == expected
        assert all(float(r["loss_dice"]) > 0 for r in rows)


def test_autocast_encoder_encodes_under_mixed_precision_and_keeps_float32(
    tiny_data, tiny_vae_dir, tmp_path, monkeypatch, request
):
    from accelerate.state import AcceleratorState

    from gmseg.first_stage import FirstStage
    from gmseg.training import make_trainer

    seen = []
    original = FirstStage.encode

    def recording(self, image):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, image)

    monkeypatch.setattr(FirstStage, "encode", recording)
    # accelerate keeps one mixed-precision setting per process: start this bf16 trainer from a fresh state and
    # leave a fresh one behind for the fp32 tests.
    AcceleratorState._reset_state(reset_partial_state=True)
    request.addfinalizer(lambda: AcceleratorState._reset_state(reset_partial_state=True))
    options = tiny_config(
        tiny_data,
        tiny_vae_dir,
        tmp_path,
        latent_epochs=1,
        latent_views=1,
        autocast_encoder=True,
        mixed_precision="bf16",
    )
    trainer = make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    trainer.setup()
    seen.clear()
    cache = trainer.build_latent_cache()
    assert seen and all(seen) and cache["image"].dtype == cache["mask"].dtype == torch.float32
    seen.clear()
    _, _, batch = next(trainer.encoded_batches())
    assert seen == [True] and batch["image"].dtype == torch.float32
    trainer.options.autocast_encoder = False
    seen.clear()
    next(trainer.encoded_batches())
    assert seen == [False]


def test_fp32_loss_decodes_in_float32_under_mixed_precision(tiny_data, tiny_vae_dir, tmp_path, monkeypatch, request):
    from accelerate.state import AcceleratorState

    from gmseg.models import GMS
    from gmseg.training import make_trainer

    seen = []
    original = GMS.latent_to_probability

    def recording(self, latent):
        if torch.is_grad_enabled():  # training decodes with gradients, validation without
            seen.append((torch.is_autocast_enabled("cpu"), latent.dtype))
        return original(self, latent)

    monkeypatch.setattr(GMS, "latent_to_probability", recording)
    AcceleratorState._reset_state(reset_partial_state=True)  # as in the autocast_encoder test
    request.addfinalizer(lambda: AcceleratorState._reset_state(reset_partial_state=True))
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, latent_epochs=0, fp32_loss=True, mixed_precision="bf16")
    trainer = make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    trainer.setup()
    steps = trainer.full_steps(epoch=0)
    losses = next(steps)
    assert seen == [(False, torch.float32)] and losses["loss_dice"].dtype == torch.float32
    trainer.options.fp32_loss = False  # the default: the decoder under the run's mixed precision
    seen.clear()
    next(steps)
    assert seen == [(True, torch.float32)]


def test_full_loss_fp32_runs_only_the_full_loss_mapping_in_float32(
    tiny_data, tiny_vae_dir, tmp_path, monkeypatch, request
):
    from accelerate.state import AcceleratorState

    from gmseg.mapping import LatentMappingModel
    from gmseg.training import make_trainer

    seen = []
    original = LatentMappingModel.forward

    def recording(self, x, levels=None):
        if torch.is_grad_enabled():  # training steps, not validation
            seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, x, levels=levels)

    monkeypatch.setattr(LatentMappingModel, "forward", recording)  # before prepare wraps it in autocast
    AcceleratorState._reset_state(reset_partial_state=True)  # as in the autocast_encoder test
    request.addfinalizer(lambda: AcceleratorState._reset_state(reset_partial_state=True))
    options = tiny_config(
        tiny_data, tiny_vae_dir, tmp_path, latent_epochs=1, epochs=2, full_loss_fp32=True, mixed_precision="bf16"
    )
    trainer = make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    trainer.setup()
    latent_step = trainer.latent_steps(0, trainer.cached_batches(0), with_dice=False)
    next(latent_step)
    assert seen == [True]  # the latent phase keeps the run's mixed precision
    seen.clear()
    full = trainer.full_steps(epoch=1)
    losses = next(full)
    assert seen == [False] and losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])
    seen.clear()
    next(latent_step)  # the prepared forward is back in place after the float32 step
    assert seen == [True]
    trainer.options.full_loss_fp32 = False
    seen.clear()
    next(full)
    assert seen == [True]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dice_fraction", 0.0, "trainer.dice_fraction must be in (0, 1]"),
        ("autocast_encoder", True, "needs train.mixed_precision"),
        ("fp32_loss", True, "trainer.fp32_loss needs train.mixed_precision"),
        ("full_loss_fp32", True, "trainer.full_loss_fp32 needs train.mixed_precision"),
    ],
)
def test_time_saving_options_are_checked(tiny_data, tiny_vae_dir, tmp_path, key, value, message):
    from gmseg.training import make_trainer

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, latent_epochs=1, **{key: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)


def test_full_loss_fp32_refuses_a_compiled_mapping(tiny_data, tiny_vae_dir, tmp_path):
    from gmseg.training import make_trainer

    options = tiny_config(
        tiny_data, tiny_vae_dir, tmp_path, latent_epochs=1, full_loss_fp32=True, mixed_precision="bf16", compile=True
    )
    with pytest.raises(ConfigError, match="set train.compile=false"):
        make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)


def test_cached_batches_turn_latents_and_masks_together(tiny_data, tiny_vae_dir, tmp_path):
    from gmseg.training import make_trainer

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, latent_epochs=1, latent_views=2, cached_full_loss=True)
    trainer = make_trainer(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    trainer.setup()
    assert "pixels" in trainer.build_latent_cache()
    # A cache whose 'mask latent' is the mask pooled to the latent grid: any batch must still be.
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(8, 1, 32, 32, generator=generator) > 0.5).to(torch.uint8)
    pooled = torch.nn.functional.avg_pool2d(pixels.float(), 8)
    trainer.latent_cache = {"image": torch.randn(8, 4, 4, 4), "mask": pooled, "pixels": pixels}
    turned = 0
    for epoch in range(6):
        for _, _, batch in trainer.cached_batches(epoch):
            assert torch.equal(torch.nn.functional.avg_pool2d(batch["pixels"].float(), 8), batch["mask"])
            turned += sum(not any(torch.equal(row, original) for original in pixels) for row in batch["pixels"])
    assert turned > 0  # some masks really were flipped or rotated, not just reordered
    # trainer.latent_dihedral off: the cached views come back as encoded, only shuffled.
    trainer.options.latent_dihedral = False
    latents = trainer.latent_cache["image"]
    for epoch in range(6):
        for _, _, batch in trainer.cached_batches(epoch):
            assert all(any(torch.equal(row, original) for original in pixels) for row in batch["pixels"])
            assert all(any(torch.equal(row, original) for original in latents) for row in batch["image"])


def test_resume_with_more_epochs_follows_the_new_schedule(tiny_data, tiny_vae_dir, tmp_path):
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=2)
    run_dir = train(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    # The finished run's optimizer ends at lr 0 (end of its cosine); extending it must not train at 0.
    train(None, resume=run_dir, overrides=["train.epochs=4"], progress=False)
    rows = read_log(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[2]["lr"]) == pytest.approx(5e-3 * release_lr_factor(2, 0, 4))


def test_nan_loss_stops_with_last_good_checkpoint(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.models import GMS

    original = GMS.loss_from_latents
    calls = {"n": 0}
    steps_per_epoch = 2  # 9 training names, batch 4, last batch dropped

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] > steps_per_epoch:  # from the first step of epoch 2 on
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(GMS, "loss_from_latents", poisoned)
    config = config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=3))
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 1") as error:
        train(config, run_dir=tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last"
    assert checkpoint_epoch(last) == 1 and f"{last} (epoch 1)" in str(error.value)
    assert load_model(last).predict_proba(torch.zeros(1, 3, 32, 32)).isfinite().all()


def test_a_kill_while_saving_keeps_the_previous_checkpoint(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.models import GMS

    original = GMS._save_pretrained

    def die_on_second_save(self, directory):
        if "epoch-0002" in str(directory):
            (Path(directory) / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt("killed while writing")
        return original(self, directory)

    monkeypatch.setattr(GMS, "_save_pretrained", die_on_second_save)
    config = config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=2))
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last"
    assert checkpoint_epoch(last) == 1
    load_model(last)  # still loadable


def test_two_cpu_processes_with_accelerate_launch(tiny_data, tiny_vae_dir, tmp_path):
    config_path = tmp_path / "config.yaml"
    import yaml

    # With the weight average on, so that its per-rank steps and main-rank saving run under DDP too.
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path / "runs", epochs=1, ema_decay=0.9)
    config_path.write_text(yaml.safe_dump(options))
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # `--multi_gpu` makes accelerate start torchrun; without GPUs each rank runs on the CPU over gloo.
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "gmseg.cli",
        "train",
        "--config",
        str(config_path),
        "--no-progress",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # both processes agreed on one run folder
    assert (runs[0] / "checkpoints" / "best" / "model.safetensors").is_file()
    state = torch.load(runs[0] / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    assert state["ema"]["optimization_step"] >= 1 and "training_weights" in state
    assert len(read_log(runs[0])) == 1
    info = json.loads((runs[0] / "run_info.json").read_text())
    assert info[-1]["num_processes"] == 2


def test_real_taesd_trains_on_real_busi_images(taesd_dir, tmp_path):
    need(BUSI)
    names = sorted(p.stem for p in (BUSI / "images").glob("benign_1*.png"))[:6]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:4], "val": names[4:], "test": []}))
    config = config_from_dict(
        {
            "name": "busi-smoke",
            "data": {"root": str(BUSI), "split": str(split), "image_size": 64},
            "model": {"vae": str(taesd_dir)},
            "train": {"epochs": 2, "batch_size": 2, "warmup_epochs": 0, "output_dir": str(tmp_path / "runs")},
        }
    )
    run_dir = train(config, progress=False)
    rows = read_log(run_dir)
    assert len(rows) == 2 and all(float(r["loss"]) == float(r["loss"]) for r in rows)
    assert 0.0 <= float(rows[-1]["val_dice"]) <= 1.0
    model = load_model(run_dir / "checkpoints" / "best")
    assert model.first_stage.source.kind == "taesd"


# ---------------------------------------------------------------------------------------------- weight average
def test_averaged_weights_are_in_place_only_inside_the_block():
    from gmseg.training import averaged_weights, make_ema

    assert make_ema(torch.nn.Linear(2, 2).parameters(), 0.0) is None
    layer = torch.nn.Linear(2, 2)
    ema = make_ema(layer.parameters(), 0.5)
    start = layer.weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            layer.weight.add_(1.0)
        ema.step(layer.parameters())
    trained = layer.weight.detach().clone()
    with averaged_weights(ema, layer.parameters()):
        averaged = layer.weight.detach().clone()
    assert torch.equal(layer.weight, trained)  # the training weights are back
    assert torch.equal(averaged, ema.shadow_params[0])
    assert (start < averaged).all() and (averaged < trained).all()  # between where it began and where it is
    with averaged_weights(None, layer.parameters()):
        assert torch.equal(layer.weight, trained)


def test_ema_is_validated_saved_and_resumed_exactly(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.models import GMS
    from gmseg.training import STATE_NAME

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=2, ema_decay=0.9)
    # Resuming must bring back both the average and the training weights it averages, or the resumed
    # run's averaged model (what is validated and saved) drifts from the uninterrupted one.
    assert_resume_matches_uninterrupted(options, tmp_path, monkeypatch)
    last = tmp_path / "straight" / "checkpoints" / "last"
    state = torch.load(last / STATE_NAME, map_location="cpu", weights_only=True)
    model = load_model(last)
    saved = list(model.mapping.parameters())  # the order EMAModel keeps its shadow in
    assert len(saved) == len(state["ema"]["shadow_params"])
    for parameter, shadow in zip(saved, state["ema"]["shadow_params"]):
        assert torch.equal(parameter.detach(), shadow)  # the model folder holds the average...
    training = GMS(model.gms_config, first_stage_module=model.first_stage).mapping
    training.load_state_dict(state["training_weights"])
    assert any(not torch.equal(a, b) for a, b in zip(saved, training.parameters()))  # ...not the training weights


def test_ema_can_start_at_a_later_epoch(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from gmseg.training import STATE_NAME

    # Epochs 1-2 train and validate the plain weights; the average starts at epoch 3 from them, at the
    # fixed decay. The interrupted run stops before it starts, so its resume must start it at the same epoch.
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=4, ema_decay=0.9)
    options["train"]["ema_start_epoch"] = 2
    logged = assert_resume_matches_uninterrupted(options, tmp_path, monkeypatch)
    plain = tiny_config(tiny_data, tiny_vae_dir, tmp_path / "plain", epochs=4)
    plain_log = read_log(train(config_from_dict(plain), run_dir=tmp_path / "plain-run", progress=False))
    assert [row["val_dice"] for row in logged[:2]] == [row["val_dice"] for row in plain_log[:2]]
    assert logged[3]["val_dice"] != plain_log[3]["val_dice"]  # validated on the average from epoch 3
    state = torch.load(
        tmp_path / "straight" / "checkpoints" / "last" / STATE_NAME, map_location="cpu", weights_only=True
    )
    steps_per_epoch = int(state["ema"]["optimization_step"]) // 2  # steps of epochs 3 and 4 only
    assert steps_per_epoch >= 1 and int(state["ema"]["optimization_step"]) == 2 * steps_per_epoch
    assert state["ema"]["min_decay"] == state["ema"]["decay"] == 0.9  # no warm-up from trained weights


def test_ema_start_epoch_needs_a_decay_and_a_place_in_the_run(tiny_data, tiny_vae_dir, tmp_path):
    from gmseg.errors import ConfigError

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=4)
    with pytest.raises(ConfigError, match="set train.ema_decay too"):
        config_from_dict(options, ["train.ema_start_epoch=2"])
    with pytest.raises(ConfigError, match="ema_start_epoch must be in"):
        config_from_dict(options, ["train.ema_decay=0.9", "train.ema_start_epoch=4"])


def test_ema_decay_must_be_below_one(tiny_data, tiny_vae_dir, tmp_path):
    from gmseg.errors import ConfigError

    with pytest.raises(ConfigError, match="ema_decay"):
        config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path, ema_decay=1.0))


# ---------------------------------------------------------------------------------------------- runs that break themselves
def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (symlinks by their target), to compare a folder byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_data, tiny_vae_dir, tmp_path_factory) -> Path:
    """A finished 2-epoch run; tests that change it copy it first."""
    out = tmp_path_factory.mktemp("finished")
    return train(config_from_dict(tiny_config(tiny_data, tiny_vae_dir, out)), run_dir=out / "run", progress=False)


def copied_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def test_resume_refuses_an_architecture_override_and_writes_nothing(finished_run, tmp_path):
    from gmseg.errors import ConfigError

    run = copied_run(finished_run, tmp_path)
    before = folder_bytes(run)
    with pytest.raises(ConfigError, match=r"model\.ch: 16 -> 64"):
        train(None, resume=run, overrides=["model.ch=64", "train.epochs=3"], progress=False)
    assert folder_bytes(run) == before
    # Variants: the input size (the weights' grid) and the split (split.json is reused) are frozen too.
    with pytest.raises(ConfigError, match=r"data\.image_size: 32 -> 64"):
        train(None, resume=run, overrides=["data.image_size=64"], progress=False)
    with pytest.raises(ConfigError, match=r"data\.val_fraction: 0\.25 -> 0\.5"):
        train(None, resume=run, overrides=["data.val_fraction=0.5"], progress=False)
    assert folder_bytes(run) == before
    train(None, resume=run, overrides=["train.epochs=3"], progress=False)  # the run is not broken
    assert [int(r["epoch"]) for r in read_log(run)] == [1, 2, 3]


def test_a_resume_that_fails_to_load_writes_nothing(tiny_data, tiny_vae_dir, tmp_path):
    import shutil

    from gmseg.errors import GmsegError

    vae = Path(shutil.copytree(tiny_vae_dir, tmp_path / "vae"))
    options = tiny_config(tiny_data, vae, tmp_path, epochs=1)
    run = train(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    before = folder_bytes(run)
    shutil.rmtree(vae)  # the first stage moved away: the resume fails after reading the run
    for _ in range(2):
        with pytest.raises(GmsegError, match="First stage"):
            train(None, resume=run, overrides=["train.epochs=2"], progress=False)
    assert folder_bytes(run) == before  # config.yaml, split.json, run_info.json (one session) as they were
    shutil.copytree(tiny_vae_dir, vae)
    train(None, resume=run, overrides=["train.epochs=2"], progress=False)
    assert len(json.loads((run / "run_info.json").read_text())) == 2


def test_a_fresh_run_that_fails_before_its_first_checkpoint_leaves_no_folder(
    tiny_data, tiny_vae_dir, tmp_path, monkeypatch
):
    from gmseg.errors import GmsegError
    from gmseg.models import GMS

    out = tmp_path / "runs"
    with pytest.raises(GmsegError, match="First stage"):
        train(config_from_dict(tiny_config(tiny_data, tmp_path / "no-vae", out)), progress=False)
    assert not out.exists() or not any(out.iterdir())

    def broken(self, *args, **kwargs):
        raise RuntimeError("bad batch")

    monkeypatch.setattr(GMS, "loss_from_latents", broken)
    with pytest.raises(RuntimeError, match="bad batch"):  # fails in the first epoch, after the folder exists
        train(config_from_dict(tiny_config(tiny_data, tiny_vae_dir, out)), progress=False)
    assert not any(out.iterdir())
    # Variant: a folder this call did not create (an empty --run-dir) is left in place.
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(RuntimeError, match="bad batch"):
        train(config_from_dict(tiny_config(tiny_data, tiny_vae_dir, out)), run_dir=given, progress=False)
    assert given.is_dir()


def test_resuming_a_finished_run_says_so_and_changes_nothing(finished_run, tmp_path, capsys):
    from gmseg.cli import main
    from gmseg.errors import GmsegError

    run = copied_run(finished_run, tmp_path)
    before = folder_bytes(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "already trained 2 epochs" in err and str(run) in err and "--set train.epochs=N" in err
    assert folder_bytes(run) == before
    # Variant: --config beside --resume would be ignored; it is an error, in the CLI and in train().
    assert main(["train", "--resume", str(run), "--config", str(run / "config.yaml")]) == 2
    assert "--config and --resume" in capsys.readouterr().err
    with pytest.raises(GmsegError, match="keeps its own"):
        train(run / "config.yaml", resume=run, progress=False)
    assert folder_bytes(run) == before


def test_best_is_a_plain_folder_that_survives_a_copy(finished_run, tmp_path):
    import shutil

    run = copied_run(finished_run, tmp_path)
    for name in ("best", "last"):
        assert (run / "checkpoints" / name).is_dir() and not (run / "checkpoints" / name).is_symlink()
    copy = Path(shutil.copytree(run / "checkpoints" / "best", tmp_path / "elsewhere", symlinks=True))
    shutil.rmtree(run)
    assert load_model(copy).predict_proba(torch.zeros(1, 3, 32, 32)).isfinite().all()


def test_an_old_run_with_symlinked_checkpoints_still_resumes(finished_run, tmp_path):
    import os

    run = copied_run(finished_run, tmp_path)
    checkpoints = run / "checkpoints"
    best_epoch = checkpoint_epoch(checkpoints / "best")
    # The layout runs had before: best and last symlinks into epoch-NNNN folders.
    (checkpoints / "last").rename(checkpoints / "epoch-0002")
    if best_epoch == 2:
        import shutil

        shutil.rmtree(checkpoints / "best")
    else:
        (checkpoints / "best").rename(checkpoints / f"epoch-{best_epoch:04d}")
    os.symlink("epoch-0002", checkpoints / "last")
    os.symlink(f"epoch-{best_epoch:04d}", checkpoints / "best")
    train(None, resume=run, overrides=["train.epochs=3"], progress=False)
    last = checkpoints / "last"
    assert checkpoint_epoch(last) == 3 and last.is_dir() and not last.is_symlink()
    # epoch-0002 went with the last link; the best link (until a better epoch replaces it) keeps its folder.
    best = checkpoints / "best"
    kept = {"best", "last"} | ({f"epoch-{best_epoch:04d}"} if best.is_symlink() else set())
    assert {p.name for p in checkpoints.iterdir()} == kept
    load_model(best)


def test_a_kill_between_the_two_renames_of_a_swap_keeps_a_readable_checkpoint(tmp_path):
    from gmseg.fileio import swap_in
    from gmseg.training import checkpoint_target

    checkpoints = tmp_path / "checkpoints"
    (checkpoints / ".last.old").mkdir(parents=True)  # renamed aside, the new one not yet in place
    assert checkpoint_target(checkpoints, "last") == checkpoints / ".last.old"
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "weights").write_text("new")
    swap_in(tmp_path / "new", checkpoints / "last")
    assert [p.name for p in checkpoints.iterdir()] == ["last"]
    assert checkpoint_target(checkpoints, "last") == checkpoints / "last"


def test_training_without_validation_keeps_the_last_epoch(tiny_data, tiny_vae_dir, tmp_path, capsys):
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=2)
    options["data"]["val_fraction"] = 0
    run = train(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    assert "no validation set" in capsys.readouterr().err
    split = json.loads((run / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == 12
    assert checkpoint_epoch(run / "checkpoints" / "best") == checkpoint_epoch(run / "checkpoints" / "last") == 2
    assert [r["val_dice"] for r in read_log(run)] == ["nan", "nan"]


def test_validation_fraction_zero_carves_nothing_but_keeps_a_given_val():
    from gmseg.data.splits import with_validation

    split = {"train": ["a", "b", "c"], "test": ["d"]}
    assert with_validation(split, 0.0) == {"train": ["a", "b", "c"], "val": [], "test": ["d"]}
    given = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert with_validation(given, 0.0) == given


def test_periodic_checkpoints_are_copied_atomically(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    import shutil

    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=2, save_every=1)
    run = train(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    checkpoints = run / "checkpoints"
    assert [checkpoint_epoch(checkpoints / f"periodic-{e:04d}") for e in (1, 2)] == [1, 2]
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]
    # Variant: a kill in the middle of the copy leaves no partial periodic folder behind.
    original = shutil.copytree

    def die_while_copying(source, destination, *args, **kwargs):
        if "periodic-" in Path(destination).name:
            Path(destination).mkdir()
            shutil.copy(Path(source) / "config.json", destination)
            raise KeyboardInterrupt("killed while copying")
        return original(source, destination, *args, **kwargs)

    monkeypatch.setattr(shutil, "copytree", die_while_copying)
    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(options), run_dir=tmp_path / "killed", progress=False)
    assert not (tmp_path / "killed" / "checkpoints" / "periodic-0001").exists()
    assert checkpoint_epoch(tmp_path / "killed" / "checkpoints" / "last") == 1


def test_cuda_device_without_cuda_is_an_error(tiny_data, tiny_vae_dir, tmp_path, monkeypatch, capsys):
    import yaml

    from gmseg.cli import main
    from gmseg.errors import GmsegError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path / "runs", device="cuda")
    with pytest.raises(GmsegError, match=r"train\.device is 'cuda'.*train\.device=auto"):
        train(config_from_dict(options), progress=False)
    assert not (tmp_path / "runs").exists()
    # Variant: the command line reports it as one message, exit status 2.
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(options))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--no-progress"]) == 2
    assert "train.device" in capsys.readouterr().err


def test_a_wall_clock_budget_stops_after_the_epoch_that_spends_it(tiny_data, tiny_vae_dir, tmp_path, capsys):
    config = config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=3, max_minutes=1e-6))
    trainer = Trainer(config, progress=False)
    run_dir = trainer.fit()
    assert trainer.stopped_by_budget
    assert [row["epoch"] for row in read_log(run_dir)] == ["1"]
    assert "train.max_minutes" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_minutes"):
        config_from_dict(tiny_config(tiny_data, tiny_vae_dir, tmp_path, max_minutes=0))


@pytest.mark.parametrize("flush", [True, False])
def test_training_flushes_denormals_then_restores_the_mode(tiny_data, tiny_vae_dir, tmp_path, monkeypatch, flush):
    """Subnormal floats can slow fp32 training several-fold (gmseg.numerics); train.flush_denormals (on
    by default) flushes them for the run's duration only."""
    from gmseg.mapping import LatentMappingModel
    from gmseg.numerics import flushing_denormals

    seen = []
    original = LatentMappingModel.forward

    def recording(self, x, levels=None):
        seen.append(flushing_denormals())
        return original(self, x, levels=levels)

    monkeypatch.setattr(LatentMappingModel, "forward", recording)
    assert not flushing_denormals()
    options = tiny_config(tiny_data, tiny_vae_dir, tmp_path, epochs=1)
    if not flush:
        options["train"]["flush_denormals"] = False
    train(config_from_dict(options), run_dir=tmp_path / "run", progress=False)
    assert seen and set(seen) == {flush}
    assert not flushing_denormals()  # the caller's mode is back


def test_flush_denormals_zeroes_subnormals_inside_the_block_only():
    from gmseg.numerics import flush_denormals

    subnormal = torch.tensor([1e-39])
    with flush_denormals():
        assert float(subnormal * 1.0) == 0.0
        with flush_denormals(False):  # off keeps subnormals whatever the caller's mode
            assert float(subnormal * 1.0) > 0.0
        assert float(subnormal * 1.0) == 0.0
    assert float(subnormal * 1.0) > 0.0

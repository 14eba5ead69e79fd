"""One typed, validated training configuration, stored as YAML.

A typo in a config should fail in the first second, with the valid names, not silently train the default
for a day. Sections mirror the concepts: ``data``, ``model`` (``name`` + that model's options), ``loss``, ``train``
and ``trainer`` (``name`` of the trainer variant + its options). Command-line overrides
use dotted keys (``--set train.epochs=20``) with YAML-parsed values.

Every section is checked when the config is read except the options of the two sections chosen by name,
``model`` and ``trainer``: their schema is the ``Options`` of the model (:mod:`gmseg.models`) or trainer variant
(:mod:`gmseg.training.variants`) they name, and those depend on this module, not the other way round. Here each
is a mapping with a string ``name``; its options are built and checked when the model or the trainer is made,
and ``gmseg train`` does both before anything is written (:func:`gmseg.models.model_options`,
:func:`gmseg.training.variants.trainer_options`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .bounds import MAX_IMAGE_SIZE, check_mask_threshold
from .data.transforms import AUGMENTATIONS, INTENSITIES, RELEASE_AUGMENTATIONS
from .errors import ConfigError


@dataclass
class DataConfig:
    root: str = ""
    split: str | None = None  # JSON or the release's .pkl; default: <root>/split.json
    protocol: str = "standard"  # "paper": select checkpoints on the test split, as the release does
    val_fraction: float = 0.1
    image_size: int = 224
    augmentations: list[str] = field(default_factory=lambda: list(RELEASE_AUGMENTATIONS))
    intensity: str = "none"  # one of INTENSITIES; a model trained with it applies it to every input
    mask_threshold: float | None = None
    num_workers: int = 0
    # Volumes (an MSD / nnU-Net folder as data.root): the array axis to slice along (0, 1, 2 of z, y, x;
    # null: the axis of largest spacing, nnU-Net's 2d rule) and the share of training slices without foreground.
    slice_axis: int | None = None
    empty_slice_fraction: float = 0.25


@dataclass
class LossConfig:
    rec_weight: float = 1.0
    dice_weight: float = 1.0
    dice_levels: list[str] | None = None  # decoded for the Dice term; None: all supervised levels (paper)


@dataclass
class TrainConfig:
    epochs: int = 1000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01  # AdamW's default, as the release
    warmup_epochs: int = 5
    seed: int = 2333
    mixed_precision: str = "no"  # "no", "bf16", "fp16"
    gradient_accumulation_steps: int = 1
    save_every: int = 0  # also keep checkpoints/periodic-NNNN every N epochs (0: never)
    # "release": the paper's per-epoch warm-up + cosine (epoch 0 at lr 0). "smooth": the same shape
    # evaluated every step, warm-up from lr/25; recommended for short schedules, where the release's
    # jump from 0 to the full lr after one epoch wastes an epoch and can stall the mapping at the mean.
    lr_schedule: str = "release"
    output_dir: str = "runs"
    device: str = "auto"  # "auto", "cpu", "cuda"; accelerate decides under `accelerate launch`
    compile: bool = False
    channels_last: bool = False
    # Exponential moving average of the trained weights (diffusers' EMAModel), e.g. 0.995; 0 turns it off
    # (the paper). When on, validation, model selection and the saved model folders use the average.
    ema_decay: float = 0.0
    # The epoch (0-based) the average starts at, from the weights trained until then, at ema_decay from its
    # first step; 0: from the first step, with diffusers' warm-up of the decay (the average of untrained
    # weights fades fast). A later start keeps an early phase's weights out of the average.
    ema_start_epoch: int = 0
    # Wall-clock budget in minutes for this process's epochs: training stops after the first epoch that ends
    # past it (the lr schedule still spans train.epochs), and says so. None: no budget.
    max_minutes: float | None = None
    # Flush subnormal floats to zero while training (gmseg.numerics): the same results, without the
    # several-fold slowdown subnormal arithmetic can cause on x86 CPUs as a mapping trains.
    flush_denormals: bool = True


@dataclass
class Config:
    name: str = "gms"
    data: DataConfig = field(default_factory=DataConfig)
    # The model and the trainer variant are chosen by name; each section holds that choice's own options
    # (gmseg.models.MODELS, checked when the model is made; gmseg.training.TRAINERS, checked when the
    # trainer is made): the raw mapping here, its options completed with their defaults in a run's config.yaml.
    model: dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_MODEL})
    loss: LossConfig = field(default_factory=LossConfig)  # GMS's loss weights (the U-Net's loss has none)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_TRAINER})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        from .fileio import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def build(cls: type, data: Any, where: str) -> Any:
    """Instantiate a (nested) dataclass from a dict, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"Unknown key(s) {', '.join(where + k for k in unknown)}; valid keys: {', '.join(valid)}")
    values = {}
    for key, value in data.items():
        if cls is Config and key in CHOSEN_SECTIONS:
            values[key] = chosen_section(key, value)
        else:
            values[key] = coerce(hints[key], value, where + key)
    return cls(**values)


#: The model of a config that names none (the paper's).
DEFAULT_MODEL = "gms"
#: The trainer variant of a config that names none (the paper's).
DEFAULT_TRAINER = "default"
#: Sections whose ``name`` selects a registered class (a model, a trainer variant), whose ``Options`` dataclass
#: is the section's schema, checked where that class is made; the name given when none is.
CHOSEN_SECTIONS = {"model": DEFAULT_MODEL, "trainer": DEFAULT_TRAINER}


def chosen_section(section: str, data: Any) -> dict[str, Any]:
    """A ``model`` or ``trainer`` section as given: a mapping whose ``name``, if given, is a string (the class
    it names checks the rest: :func:`gmseg.models.model_options`, :func:`gmseg.training.variants.trainer_options`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{section} must be a mapping, got {type(data).__name__}")
    if not isinstance(data.get("name", CHOSEN_SECTIONS[section]), str):
        raise ConfigError(f"{section}.name must be a string, got {data['name']!r}")
    return dict(data)


def section_options(section: str, name: str, values: dict[str, Any], registry: dict[str, Any]) -> Any:
    """The options dataclass of ``section.name`` built from ``values`` (every key and type checked);
    ``registry``: name -> class with an ``Options`` dataclass (the models', the trainer variants')."""
    if name not in registry:
        raise ConfigError(f"{section}.name {name!r} is unknown; choose one of {', '.join(sorted(registry))}")
    return build(registry[name].Options, {**values, "name": name}, section + ".")


def named_section(section: str, data: Any, registry: dict[str, Any], default: str) -> Any:
    """A section whose ``name`` (else ``default``) selects a registry entry, built as that entry's options."""
    data = chosen_section(section, data)
    name = data.get("name", default)
    own = {f.name for f in dataclasses.fields(registry[name].Options)} if name in registry else set()
    # Switching by name (--set model.name=unet on a GMS config) drops the other choices' options; a key
    # that no choice knows is still an error.
    foreign = {f.name for cls in registry.values() for f in dataclasses.fields(cls.Options)} - own
    if "name" not in data:  # no switch: every key must be the default choice's own
        foreign = set()
    values = {k: v for k, v in data.items() if k != "name" and k not in foreign}
    return section_options(section, name, values, registry)


#: Keys of the CPU-budget schedule that used to sit in ``train`` (run folders before the trainer variants).
LEGACY_TRAIN_KEYS = ("latent_epochs", "latent_views", "cached_full_loss", "full_loss_lr_scale", "latent_dihedral")


def migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Configs written before the trainer variants: their CPU-budget keys move from ``train`` to the
    ``trainer: {name: cached_latents}`` section, so old run folders still load and resume."""
    train = data.get("train")
    if not isinstance(train, dict) or not any(key in train for key in LEGACY_TRAIN_KEYS):
        return data
    train = dict(train)
    moved = {key: train.pop(key) for key in LEGACY_TRAIN_KEYS if key in train}
    data = {**data, "train": train}
    if moved.get("latent_epochs", 0) or moved.get("cached_full_loss", False):
        trainer = data.get("trainer") if isinstance(data.get("trainer"), dict) else {}
        data["trainer"] = {"name": "cached_latents", **moved, **trainer}
    return data


def coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return coerce(inner, value, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "2e-3" as a string
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def check_ranges(config: Config) -> None:
    """Values that parse but make no sense are rejected with the accepted range."""
    problems = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    d, t, loss = config.data, config.train, config.loss
    need(d.protocol in ("standard", "paper"), f"data.protocol must be 'standard' or 'paper', got {d.protocol!r}")
    need(0.0 <= d.val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    need(d.slice_axis in (None, 0, 1, 2), f"data.slice_axis must be 0, 1, 2 or null (the rule), got {d.slice_axis}")
    need(
        0.0 <= d.empty_slice_fraction <= 1.0,
        f"data.empty_slice_fraction must be in [0, 1], got {d.empty_slice_fraction}",
    )
    need(
        32 <= d.image_size <= MAX_IMAGE_SIZE and d.image_size % 8 == 0,
        f"data.image_size must be a multiple of 8 in [32, {MAX_IMAGE_SIZE}], got {d.image_size}",
    )
    unknown_aug = [a for a in d.augmentations if a not in AUGMENTATIONS]
    need(not unknown_aug, f"data.augmentations has unknown {unknown_aug}; valid: {AUGMENTATIONS}")
    need(d.intensity in INTENSITIES, f"data.intensity must be one of {INTENSITIES}, got {d.intensity!r}")
    need(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes must be a positive number of minutes or null")
    try:
        check_mask_threshold(d.mask_threshold, "data.mask_threshold")
    except ConfigError as error:
        problems.append(str(error))
    need(d.num_workers >= 0, "data.num_workers must be >= 0")
    need(loss.rec_weight >= 0 and loss.dice_weight >= 0, "loss weights must be >= 0")
    need(loss.rec_weight + loss.dice_weight > 0, "at least one loss weight must be > 0")
    need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(0.0 < t.lr < 1.0, f"train.lr must be in (0, 1), got {t.lr}")
    need(t.weight_decay >= 0, "train.weight_decay must be >= 0")
    need(0 <= t.warmup_epochs < t.epochs, f"train.warmup_epochs must be in [0, epochs), got {t.warmup_epochs}")
    need(
        t.mixed_precision in ("no", "bf16", "fp16"),
        f"train.mixed_precision must be no, bf16 or fp16, got {t.mixed_precision!r}",
    )
    need(t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps must be >= 1")
    need(t.save_every >= 0, "train.save_every must be >= 0")
    need(t.lr_schedule in ("release", "smooth"), f"train.lr_schedule must be release or smooth, got {t.lr_schedule!r}")
    need(0.0 <= t.ema_decay < 1.0, f"train.ema_decay must be in [0, 1) (0: off), got {t.ema_decay}")
    need(0 <= t.ema_start_epoch < t.epochs, f"train.ema_start_epoch must be in [0, epochs), got {t.ema_start_epoch}")
    need(
        t.ema_start_epoch == 0 or t.ema_decay > 0,
        "train.ema_start_epoch starts the weight average: set train.ema_decay too (e.g. 0.998)",
    )
    need(t.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {t.device!r}")
    problems += run_folder_problems(config.name, t.output_dir)
    raise_problems(problems)


def raise_problems(problems: list[str]) -> None:
    """All of a config's problems in one error, so that a user fixes them in one pass."""
    if problems:
        raise ConfigError("Invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def run_folder_problems(name: str, output_dir: str) -> list[str]:
    """The run folder ``output_dir/NAME-TIMESTAMP`` must stay inside ``output_dir``, which may not be a root."""
    problems = []
    if not name or any(c in name for c in ("/", "\\", "\x00")):
        problems.append(
            f"name must be a plain folder name (no '/' or '\\'), got {name!r}: runs are written to "
            "train.output_dir/NAME-TIMESTAMP and may not leave train.output_dir"
        )
    if not str(output_dir).strip() or Path(output_dir).resolve() == Path(Path(output_dir).resolve().anchor):
        problems.append(
            f"train.output_dir must be a folder for runs, not {str(output_dir)!r} (a file system root or nothing)"
        )
    return problems


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` with the value read as YAML by the safe loader (no tags that build objects)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like section.key=value, e.g. train.epochs=20")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(
            f"Override {text!r}: {error.problem or 'unknown tag'}; values are plain YAML (numbers, strings, "
            "lists, mappings), tags such as !!python are refused"
        ) from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"Override {text!r}: the value is not valid YAML ({where}); e.g. train.epochs=20, "
            "data.augmentations=[hflip,vflip], or quote a string: model.vae='owner/name'"
        ) from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    config = build(Config, migrate_legacy(apply_overrides(dict(data or {}), overrides or [])), "")
    check_ranges(config)
    return config


# What a resumed run's checkpoint and split.json were made with. ``model.*`` and ``data.image_size`` shape
# the weights; the run's split.json is reused, so data.split/val_fraction/protocol would be ignored
# silently. data.root may move: the split's names are looked up (and checked) in the new root. On volumes,
# data.slice_axis decides what a model input is (recorded in the checkpoint) and data.empty_slice_fraction
# which slices the epochs draw: a resume with either changed would not continue the same run.
RESUME_FROZEN = (
    "model",
    "data.image_size",
    "data.intensity",
    "data.split",
    "data.val_fraction",
    "data.protocol",
    "data.slice_axis",
    "data.empty_slice_fraction",
)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys, to compare two configs key by key."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume_config(saved: Config, new: Config, run: str | os.PathLike) -> None:
    """Refuse, before anything is written, a resume that changes what the checkpoint depends on (give both
    with their ``model`` options completed, :func:`gmseg.models.with_model_options`: an omitted option
    and its default are the same)."""
    old_values, new_values = flatten(saved.to_dict()), flatten(new.to_dict())
    keys = [*old_values, *(key for key in new_values if key not in old_values)]
    changed = [
        f"{key}: {old_values.get(key)!r} -> {new_values.get(key)!r}"
        for key in keys
        if old_values.get(key) != new_values.get(key)
        and any(key == f or key.startswith(f + ".") for f in RESUME_FROZEN)
    ]
    if changed:
        raise ConfigError(
            f"Cannot resume {run} with a changed {', '.join(changed)}: its checkpoint and split.json were "
            "made with the old value(s). Start a new run (--config with the new values) instead."
        )


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (a file or a packaged config's name; defaults when ``path`` is None) and apply
    ``key=value`` overrides.

    Relative paths inside are relative to the working directory, like every other path on the CLI.
    """
    from .configs import config_path

    data: dict[str, Any] = {}
    if path is not None:
        if Path(path).is_dir():
            raise ConfigError(f"config {path} is a folder; pass a YAML file (e.g. RUN/config.yaml) or a packaged name")
        path = config_path(path)  # a file, or the name of a packaged config (busi, cpu-taesd, ...)
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"Cannot read config {path}: not UTF-8 text (byte {error.start}); a config is a YAML text file"
            ) from None
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"Cannot read config {path}: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a YAML mapping of sections (data, model, loss, train)")
    return config_from_dict(data, overrides)

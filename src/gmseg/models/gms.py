"""GMS = frozen first stage + latent mapping model (registered as ``model.name: gms``).

This module owns the paper's maths end to end: image -> latent -> mask latent -> probability map, and the
training loss (latent MSE + Dice on decoded masks over the deep-supervision levels). Its model folder, which
the base class writes and reads, is ``config.json`` (:class:`GMSConfig`: mapping architecture, how to obtain
the first stage, loss settings) plus ``model.safetensors`` holding only the 1.5 M trainable weights; the
first stage is referenced, or stored in ``first_stage/`` for offline use (the hooks at the end of GMS).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import MAX_IMAGE_SIZE
from ..data.transforms import INTENSITIES
from ..errors import ConfigError
from ..first_stage import DEFAULT_VAE, FirstStage, FirstStageSource, identify_source, load_first_stage
from ..first_stage.sources import KINDS
from ..labels import BINARY, LabelSet
from ..mapping import LatentMappingModel
from .base import CLASS_KEY, Autocast, SegmentationModel
from .encodings import ENCODINGS, image_to_probability, make_encoding, mask_to_image

FIRST_STAGE_DIR = "first_stage"


@dataclass
class GMSOptions:
    """The ``model`` section of a run config for GMS: how to get the first stage and the mapping's size.

    The mapping's input and output widths are not options: they follow the first stage.
    """

    name: str = "gms"
    vae: str = DEFAULT_VAE
    vae_config: str | None = None
    ch: int = 32
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    supervised_levels: list[str] = field(default_factory=lambda: ["level2", "level1", "out"])
    noise_probability: float = 0.5
    # Latent noise for first stages without a posterior (TAESD and the other tiny autoencoders): with
    # probability noise_probability the image latent gets std * N(0, 1); 0 keeps the release's behaviour.
    latent_noise_std: float = 0.0
    # How a dataset with more than two classes enters the autoencoder (gmseg.models.encodings); binary
    # datasets always use the release's encoding. The default won on validation (BENCHMARKS.md, "Multi-class").
    mask_encoding: str = "one_vs_rest"

    def problems(self) -> list[str]:
        """Values that parse but make no sense, with the accepted range."""
        found = []
        if not (self.ch > 0 and self.ch % 16 == 0):
            found.append(f"model.ch must be a positive multiple of 16, got {self.ch}")
        if not (len(self.ch_mult) >= 1 and all(x >= 1 for x in self.ch_mult)):
            found.append(f"model.ch_mult must be positive integers, got {self.ch_mult}")
        if not 0.0 <= self.noise_probability <= 1.0:
            found.append(f"model.noise_probability must be in [0, 1], got {self.noise_probability}")
        if not self.latent_noise_std >= 0.0:
            found.append(f"model.latent_noise_std must be >= 0, got {self.latent_noise_std}")
        if len(self.supervised_levels) < 1:
            found.append("model.supervised_levels must name at least one level, e.g. [out]")
        if self.mask_encoding not in ENCODINGS:
            found.append(f"model.mask_encoding must be one of {list(ENCODINGS)}, got {self.mask_encoding!r}")
        return found


@dataclass
class GMSConfig:
    """Everything needed to rebuild a GMS model, stored as a model folder's ``config.json``."""

    mapping: dict[str, Any] = field(
        default_factory=lambda: {"in_channels": 4, "out_channels": 4, "ch": 32, "ch_mult": [1, 2, 4, 4]}
    )
    first_stage: dict[str, Any] = field(default_factory=lambda: identify_source(DEFAULT_VAE).to_dict())
    image_size: int = 224
    intensity: str = "none"  # histogram standardisation of every input (gmseg.config.INTENSITIES)
    supervised_levels: list[str] = field(default_factory=lambda: ["level2", "level1", "out"])
    # Levels whose decoded masks enter the Dice term (None: all supervised levels, as the paper). Each one
    # costs a decoder pass with gradients, the dominant cost of a training step.
    dice_levels: list[str] | None = None
    rec_weight: float = 1.0
    dice_weight: float = 1.0
    noise_probability: float = 0.5
    latent_noise_std: float = 0.0
    threshold: float = 0.5
    # The classes (dataset.json "labels" form) and their encoding; None: binary, the release's encoding.
    labels: dict[str, int] | None = None
    mask_encoding: str = "one_vs_rest"
    # Trained on volumes: how voxels become its input (gmseg.data.normalization.VolumeInput); None: 2D images.
    volume: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GMSConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a GMS config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"gmseg_version", CLASS_KEY})
        if unknown:
            raise ConfigError(f"Unknown GMS config keys {unknown}; valid keys: {sorted(known)}")
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.check()
        return config

    @classmethod
    def problems_of(cls, data: Any) -> list[str]:
        """Every problem of a stored config (unknown keys, types, ranges), key by key; [] when it is sound."""
        try:
            cls.from_dict(data)
        except ConfigError as error:
            return [str(error).removeprefix("invalid GMS config: ")]
        except TypeError as error:  # e.g. a list where a name belongs
            return [f"a value has the wrong type ({error})"]
        return []

    def check(self) -> None:
        """Types and ranges, checked where a config enters (a hand-edited config.json, say)."""

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        problems = []
        if not (
            isinstance(self.image_size, int)
            and not isinstance(self.image_size, bool)
            and 8 <= self.image_size <= MAX_IMAGE_SIZE
            and self.image_size % 8 == 0
        ):
            problems.append(f"image_size must be a multiple of 8 in [8, {MAX_IMAGE_SIZE}], got {self.image_size!r}")
        if self.intensity not in INTENSITIES:
            problems.append(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        for key in ("threshold", "noise_probability"):
            value = getattr(self, key)
            if not (number(value) and 0.0 <= value <= 1.0):
                problems.append(f"{key} must be a number in [0, 1], got {value!r}")
        for key in ("rec_weight", "dice_weight", "latent_noise_std"):
            if not (number(getattr(self, key)) and getattr(self, key) >= 0):
                problems.append(f"{key} must be a non-negative number, got {getattr(self, key)!r}")
        problems += mapping_problems(self.mapping) + first_stage_problems(self.first_stage)
        for key in ("supervised_levels", "dice_levels"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                problems.append(f"{key} must be a list of level names, got {value!r}")
        if self.mask_encoding not in ENCODINGS:
            problems.append(f"mask_encoding must be one of {list(ENCODINGS)}, got {self.mask_encoding!r}")
        if problems:
            raise ConfigError("invalid GMS config: " + "; ".join(problems))
        self.label_set()  # a malformed labels dict fails here, with the label set's own message
        if self.volume is not None:
            from ..data.normalization import VolumeInput

            VolumeInput.from_dict(self.volume)

    def label_set(self) -> LabelSet:
        return BINARY if self.labels is None else LabelSet.from_labels(self.labels)

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        data = asdict(self)
        if self.labels is None:  # a binary model's config.json stays as it always was
            del data["labels"], data["mask_encoding"]
        if not self.latent_noise_std:
            del data["latent_noise_std"]
        if self.intensity == "none":
            del data["intensity"]
        if self.volume is None:
            del data["volume"]
        return {CLASS_KEY: GMS.__name__, **data, "gmseg_version": __version__}


class GMS(SegmentationModel, tags=["gms"]):
    """Generative Medical Segmentation: segment by mapping latents of a frozen autoencoder.

    Inputs are images in [-1, 1] (B, 3, H, W) with H, W multiples of 8, and masks in {0, 1} (B, 1, H, W).
    """

    name = "gms"
    Options = GMSOptions

    @staticmethod
    def config_problems(config: dict[str, Any]) -> list[str]:
        """The model folder's config.json schema (:class:`GMSConfig`), checked where the folder is loaded."""
        return GMSConfig.problems_of(config)

    def __init__(self, config: GMSConfig | dict[str, Any] | None = None, first_stage_module: FirstStage | None = None):
        super().__init__()
        if config is None:
            config = GMSConfig()
        self.gms_config = config if isinstance(config, GMSConfig) else GMSConfig.from_dict(config)
        if first_stage_module is None:
            first_stage_module = load_first_stage(self.gms_config.first_stage)
        elif first_stage_module.source is not None:
            self.gms_config.first_stage = first_stage_module.source.to_dict()
        self.first_stage = first_stage_module
        self.labels = self.gms_config.label_set()
        self.encoding = None if self.labels.is_binary else make_encoding(self.gms_config.mask_encoding, self.labels)
        check_widths(self.gms_config.mapping, first_stage_module, self.out_channels_per_latent_channel)
        self.mapping = LatentMappingModel(**self.gms_config.mapping)
        supervised = self.gms_config.supervised_levels
        if not supervised or set(supervised) - set(self.mapping.level_names):
            raise ConfigError(
                f"supervised_levels {supervised} must be a non-empty subset of {self.mapping.level_names}"
            )
        if set(self.dice_levels) - set(supervised):
            raise ConfigError(f"dice_levels {self.dice_levels} must be a subset of supervised_levels {supervised}")
        from monai.losses import DiceLoss

        # Multi-class: Dice over the foreground classes of the softmax-like class probabilities.
        self.dice_loss = DiceLoss() if self.encoding is None else DiceLoss(include_background=False, to_onehot_y=True)

    @property
    def out_channels_per_latent_channel(self) -> int:
        """1, or K - 1 for the one-vs-rest encoding (one mask latent per foreground class)."""
        return 1 if self.encoding is None else self.encoding.latent_channels(1)

    @classmethod
    def from_run_config(cls, config: Any, labels: LabelSet = BINARY) -> GMS:
        """GMS as a run config describes it: the first stage from ``model.vae``, the mapping's widths from
        the first stage's latent channels (and the mask encoding, for ``labels`` of more than two
        classes), the loss from the ``loss`` section."""
        options, loss = cls.run_options(config), config.loss
        first_stage = load_first_stage(options.vae, options.vae_config)
        channels = int(getattr(first_stage, "latent_channels", 4))
        encoding = None if labels.is_binary else make_encoding(options.mask_encoding, labels)
        gms_config = GMSConfig(
            mapping={
                "in_channels": channels,
                "out_channels": channels if encoding is None else encoding.latent_channels(channels),
                "ch": options.ch,
                "ch_mult": list(options.ch_mult),
            },
            image_size=config.data.image_size,
            intensity=config.data.intensity,
            supervised_levels=list(options.supervised_levels),
            rec_weight=loss.rec_weight,
            dice_weight=loss.dice_weight,
            dice_levels=None if loss.dice_levels is None else list(loss.dice_levels),
            noise_probability=options.noise_probability,
            latent_noise_std=options.latent_noise_std,
            labels=None if labels.is_binary else labels.to_labels(),
            mask_encoding=options.mask_encoding,
        )
        return cls(gms_config, first_stage_module=first_stage)

    @property
    def trainable(self) -> nn.Module:
        return self.mapping

    @property
    def image_size(self) -> int:
        """The square size images are resized to before the first stage (the inference contract)."""
        return int(self.gms_config.image_size)

    @property
    def intensity(self) -> str:
        return self.gms_config.intensity

    @property
    def volume_input(self) -> Any:
        from ..data.normalization import VolumeInput

        return None if self.gms_config.volume is None else VolumeInput.from_dict(self.gms_config.volume)

    def record_volume_input(self, record: Any) -> None:
        self.gms_config.volume = record.to_dict()

    @property
    def threshold(self) -> float:
        return float(self.gms_config.threshold)

    @property
    def dice_levels(self) -> list[str]:
        levels = self.gms_config.dice_levels
        return list(self.gms_config.supervised_levels if levels is None else levels)

    # ------------------------------------------------------------------ inference
    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled latent mean and log-variance of an image; no gradients (the first stage is frozen)."""
        with torch.no_grad():
            return self.first_stage.encode(image)

    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A {0,1} mask enters the autoencoder as three equal channels in [-1, 1], as in the release; a
        class-index mask goes through the model's mask encoding."""
        with torch.no_grad():
            if self.encoding is not None:
                return self.encoding.encode(self.first_stage, mask)
            return self.first_stage.encode(mask_to_image(mask))[0]

    def encode_pair(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(image latent mean, image log-variance or None, mask latent) from one first-stage call.

        Image and mask go through the encoder as one batch: per-sample arithmetic (convolutions,
        per-sample GroupNorm), one call instead of two.
        """
        if self.encoding is not None:
            mean, logvar = self.encode(image)
            return mean, logvar, self.encode_mask(mask)
        with torch.no_grad():
            means, logvars = self.first_stage.encode(torch.cat([image, mask_to_image(mask)]))
        image_mean, mask_latent = means.chunk(2)
        return image_mean, None if logvars is None else logvars.chunk(2)[0], mask_latent

    def latent_to_probability(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode a mask latent to a foreground probability (B, 1, H, W): mean over RGB, mapped to [0, 1];
        with more than two classes, to the K class probabilities (B, K, H, W) of the mask encoding."""
        if self.encoding is not None:
            return self.encoding.probabilities(self.first_stage, latent)
        return image_to_probability(self.first_stage.decode(latent))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W), or K class probabilities (B, K, H, W), for images in [-1, 1]."""
        latent, _ = self.encode(image)
        return self.map_to_probability(latent)

    def map_to_probability(self, image_latent: torch.Tensor) -> torch.Tensor:
        """Image latent -> foreground probability: only the 'out' head is evaluated, then decoded."""
        return self.latent_to_probability(self.mapping(image_latent, levels=["out"])["out"])

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Inference entry point: like ``forward`` but without building a graph."""
        return self.forward(image)

    def inference_stages(self) -> tuple[Any, Any]:
        """(encode, map + decode): the frozen encoder stays eager when the rest is compiled."""
        return (lambda image: self.encode(image)[0]), self.map_to_probability

    # ------------------------------------------------------------------ training
    def noisy_latent(
        self, mean: torch.Tensor, logvar: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The release's latent augmentation: with probability p use s*mu + sigma*eps, sigma unscaled.

        The release adds exp(logvar/2) to the *scaled* mean without scaling sigma; we keep that exactly
        because the published numbers depend on it. Deterministic first stages (TAESD) have no variance:
        they get ``latent_noise_std`` instead, when it is set (otherwise no noise, as the release).
        """
        std = self.gms_config.latent_noise_std
        if (logvar is None and not std) or self.gms_config.noise_probability <= 0:
            return mean
        if torch.rand((), generator=generator).item() >= self.gms_config.noise_probability:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return mean + (std if logvar is None else torch.exp(0.5 * logvar)) * noise

    def loss_from_latents(
        self,
        image_latent: torch.Tensor,
        mask_latent: torch.Tensor,
        mask: torch.Tensor | None,
        outputs: dict[str, torch.Tensor] | None = None,
        dice_samples: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Latent MSE + Dice of the decoded masks, summed over the supervised levels.

        All levels go through the decoder as one batch: the decoder dominates the cost and batching
        is the same arithmetic per sample (its GroupNorms are per sample). ``mask=None`` leaves the Dice
        term out (zero): the latent-only epochs train without the decoder in the loop. ``dice_samples``
        decodes only the batch's first samples for the Dice term (a cheaper, noisier estimate of it).
        """
        levels = self.gms_config.supervised_levels
        if outputs is None:
            outputs = self.mapping(image_latent, levels=levels)
        loss_rec = sum(F.mse_loss(outputs[name], mask_latent) for name in levels)
        loss_dice = image_latent.new_zeros(())
        dice_levels = self.dice_levels
        if mask is not None and self.gms_config.dice_weight > 0 and dice_levels:
            kept = slice(None, dice_samples)
            probabilities = self.latent_to_probability(torch.cat([outputs[name][kept] for name in dice_levels]))
            loss_dice = sum(self.dice_loss(p, mask[kept]) for p in probabilities.chunk(len(dice_levels)))
        loss_rec = self.gms_config.rec_weight * loss_rec
        loss_dice = self.gms_config.dice_weight * loss_dice
        return {"loss": loss_rec + loss_dice, "loss_rec": loss_rec, "loss_dice": loss_dice}

    def training_loss(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
        autocast: Autocast = nullcontext,
    ) -> dict[str, torch.Tensor]:
        """The paper's step from pixels (image in [-1, 1], mask in {0, 1}): encode (image, mask), latent
        noise, map (``net``: the mapping as the trainer prepared it), decode levels, MSE + Dice. Mixed
        precision covers the mapping and the loss, not the frozen encoder."""
        mean, logvar, mask_latent = self.encode_pair(image, mask)
        latent = self.noisy_latent(mean, logvar, generator)
        with autocast():
            outputs = (net or self.mapping)(latent, levels=self.gms_config.supervised_levels)
            return self.loss_from_latents(latent, mask_latent, mask, outputs=outputs)

    def validation_inputs(self, image: torch.Tensor) -> torch.Tensor:
        """The image latent: the first stage is frozen, so validation encodes once per run."""
        return self.encode(image)[0]

    def validation_probabilities(
        self, inputs: torch.Tensor, net: nn.Module | None = None, autocast: Autocast = nullcontext
    ) -> torch.Tensor:
        with autocast():
            out = (net or self.mapping)(inputs, levels=["out"])["out"]
        return self.latent_to_probability(out.float())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "first_stage": self.gms_config.first_stage}

    # ------------------------------------------------------------------ model folder (the base's hooks)
    def to_config(self) -> dict[str, Any]:
        return self.gms_config.to_dict()

    def save_artefacts(self, folder: Path, *, include_first_stage: bool = False) -> dict[str, Any]:
        """``include_first_stage`` stores the autoencoder in ``first_stage/`` so the folder works offline and
        on machines without the source; its record stays, so a given first stage is still checked."""
        if not include_first_stage:
            return {}
        self.first_stage.save_pretrained(folder / FIRST_STAGE_DIR)
        recorded = self.first_stage.source.recorded() if self.first_stage.source is not None else {}
        return {"first_stage": {"kind": "diffusers", "path": FIRST_STAGE_DIR, **recorded}}

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        folder: Path,
        *,
        first_stage_module: FirstStage | None = None,
        local_files_only: bool = False,
    ) -> GMS:
        """The first stage the config records (resolved against ``folder``), or ``first_stage_module`` when
        the caller has it loaded, which must then be the one the model was trained with."""
        gms_config = GMSConfig.from_dict(config)
        record = dict(gms_config.first_stage)
        if first_stage_module is None:
            first_stage_module = load_first_stage(record, base_dir=folder, local_files_only=local_files_only)
        else:
            FirstStageSource.from_dict(record).check(first_stage_module)
        model = cls(gms_config, first_stage_module=first_stage_module)
        model.gms_config.first_stage = record  # the stored (maybe folder-relative) source: a re-save stays portable
        return model


#: The mapping model's keyword arguments and their bounds, as stored in a model folder's ``config.json``.
MAPPING_KEYS = ("in_channels", "out_channels", "ch", "ch_mult")
MAX_LATENT_CHANNELS = 256
MAX_CH = 1024
MAX_LEVELS = 8


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def mapping_problems(mapping: Any) -> list[str]:
    """What is wrong with a stored ``mapping`` (the :class:`LatentMappingModel` arguments), key by key."""
    if not isinstance(mapping, dict):
        return [f"mapping must be a JSON object with keys {list(MAPPING_KEYS)}, got {mapping!r}"]
    found = [
        f"mapping.{key} is not a mapping key (valid: {list(MAPPING_KEYS)})"
        for key in mapping
        if key not in MAPPING_KEYS
    ]
    for key in ("in_channels", "out_channels"):
        value = mapping.get(key, 4)
        if not (_integer(value) and 1 <= value <= MAX_LATENT_CHANNELS):
            found.append(f"mapping.{key} must be an integer in [1, {MAX_LATENT_CHANNELS}], got {value!r}")
    ch = mapping.get("ch", 32)
    if not (_integer(ch) and 16 <= ch <= MAX_CH and ch % 16 == 0):
        found.append(f"mapping.ch must be a multiple of 16 in [16, {MAX_CH}], got {ch!r}")
    mult = mapping.get("ch_mult", [1, 2, 4, 4])
    if not (
        isinstance(mult, list) and 1 <= len(mult) <= MAX_LEVELS and all(_integer(m) and 1 <= m <= 16 for m in mult)
    ):
        found.append(f"mapping.ch_mult must be 1 to {MAX_LEVELS} integers in [1, 16], e.g. [1, 2, 4, 4]; got {mult!r}")
    return found


def first_stage_problems(source: Any) -> list[str]:
    """What is wrong with a stored ``first_stage`` record (a :class:`FirstStageSource`), key by key."""
    if not isinstance(source, dict):
        return [f"first_stage must be a JSON object with 'kind' and 'path', got {source!r}"]
    known = {f.name for f in fields(FirstStageSource)}
    found = [
        f"first_stage.{key} is not a first-stage key (valid: {sorted(known)})" for key in source if key not in known
    ]
    if source.get("kind") not in KINDS:
        found.append(f"first_stage.kind must be one of {list(KINDS)}, got {source.get('kind')!r}")
    if not (isinstance(source.get("path"), str) and source.get("path")):
        found.append(f"first_stage.path must be a non-empty string (a Hub id or a path), got {source.get('path')!r}")
    for key in ("subfolder", "config", "name"):
        if source.get(key) is not None and not isinstance(source[key], str):
            found.append(f"first_stage.{key} must be a string or absent, got {source[key]!r}")
    width = source.get("latent_channels")
    if width is not None and not (_integer(width) and 1 <= width <= MAX_LATENT_CHANNELS):
        found.append(f"first_stage.latent_channels must be an integer in [1, {MAX_LATENT_CHANNELS}], got {width!r}")
    for key in ("scaling_factor", "shift_factor"):
        value = source.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            found.append(f"first_stage.{key} must be a number or absent, got {value!r}")
    return found


def check_widths(mapping: dict[str, Any], first_stage: FirstStage, out_factor: int = 1) -> None:
    """A mapping trained on one latent width cannot read another first stage's latents: say so by name.
    ``out_factor``: mask latents per image (K - 1 for the one-vs-rest encoding)."""
    width = getattr(first_stage, "latent_channels", None)
    wanted = {key: mapping.get(key, 4) for key in ("in_channels", "out_channels")}
    if width is not None and (
        int(wanted["in_channels"]) != int(width) or int(wanted["out_channels"]) != int(width) * out_factor
    ):
        raise ConfigError(
            f"the mapping model expects {wanted['in_channels']}-channel latents (in_channels="
            f"{wanted['in_channels']}, out_channels={wanted['out_channels']}) but the first stage "
            f"{getattr(first_stage, 'source', None) or type(first_stage).__name__} has {width} latent channels; "
            "use the first stage the model was trained with, or train a new model on this one."
        )

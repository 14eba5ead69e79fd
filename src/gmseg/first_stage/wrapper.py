"""The frozen first stage: every way to obtain a Stable Diffusion autoencoder, behind one interface.

GMS never trains the autoencoder; it only needs ``encode`` (image -> scaled latent mean and log-variance)
and ``decode`` (scaled latent -> image). Users arrive with very different files: a Hub id, a diffusers
folder, the release's original LDM checkpoint plus yaml, or the tiny TAESD weights. All of them become a
:class:`FirstStage`, and a small JSON-able *source* dict records how to get it back, so a saved GMS model
folder can rebuild its first stage without the user repeating themselves.

Scaling lives here, not in the mapping model: the scale factor comes from the source (0.18215 for the SD
VAE, 1.0 for TAESD whose latents are already scaled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, FirstStageError

#: The paper's first stage: the Stable Diffusion 2 (768-v-ema) VAE. ``owner/repo/subfolder`` syntax.
DEFAULT_VAE = "stabilityai/stable-diffusion-2/vae"
#: The 10 MB tiny autoencoder used by ``gmseg demo`` and CPU configs.
TAESD_HUB_ID = "madebyollin/taesd"

OFFLINE_HINT = (
    "Pass a local first stage instead: a diffusers folder (with config.json), an LDM checkpoint "
    "'--vae model.ckpt --vae-config v2-inference-v-first-stage-VAE.yaml', or a folder holding "
    "taesd_encoder.safetensors and taesd_decoder.safetensors (e.g. --vae ../shared/weights/taesd)."
)

TAESD_FILE_STEMS = ("taesd_encoder", "taesd_decoder")
#: On a CPU, encode/decode split a batch so that one full-resolution activation stays below this size
#: (glibc's largest mmap threshold): larger buffers are mmapped fresh and page-faulted in on every call,
#: which made a batched training step twice as slow as the same images in small chunks (BENCHMARKS.md).
CPU_CHUNK_BYTES = 32 * 2**20
TAESD_SUFFIXES = (".safetensors", ".pth")


@dataclass
class FirstStageSource:
    """How to obtain a first stage; stored in a model folder's config.

    kind: ``hub`` (Hub id, optional subfolder), ``diffusers`` (local folder), ``ldm`` (checkpoint + yaml)
    or ``taesd`` (folder with upstream encoder/decoder files).
    """

    kind: str
    path: str
    subfolder: str | None = None
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FirstStageSource:
        return cls(**data)

    def resolved(self, base: Path | None) -> FirstStageSource:
        """Paths stored relative to a model folder become absolute against it."""
        if self.kind == "hub" or base is None:
            return self

        def absolute(p: str | None) -> str | None:
            if p is None or os.path.isabs(p):
                return p
            return str(Path(base) / p)

        return FirstStageSource(self.kind, absolute(self.path), self.subfolder, absolute(self.config))


class FirstStage(nn.Module):
    """A frozen autoencoder with GMS's conventions: images in [-1, 1], latents already scaled."""

    def __init__(self, autoencoder: nn.Module, scaling_factor: float, source: FirstStageSource | None = None):
        super().__init__()
        self.autoencoder = autoencoder
        self.scaling_factor = float(scaling_factor)
        self.source = source
        self.autoencoder.eval()
        self.autoencoder.requires_grad_(False)

    @property
    def has_variance(self) -> bool:
        """TAESD is deterministic: no posterior variance, so no latent-noise augmentation."""
        return not self.is_tiny

    @property
    def is_tiny(self) -> bool:
        from diffusers import AutoencoderTiny

        return isinstance(self.autoencoder, AutoencoderTiny)

    def train(self, mode: bool = True) -> FirstStage:
        # Frozen means frozen: dropout/normalisation stay in eval mode even inside a training model.
        super().train(mode)
        self.autoencoder.eval()
        return self

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image (B,3,H,W) in [-1,1] -> (scaled posterior mean, posterior log-variance or None)."""
        chunks = self.cpu_chunks(image, image.shape[-2] * image.shape[-1])
        if len(chunks) > 1:
            means, logvars = zip(*(self.encode(chunk) for chunk in chunks))
            return torch.cat(means), None if logvars[0] is None else torch.cat(logvars)
        if self.is_tiny:
            return self.autoencoder.encode(image).latents * self.scaling_factor, None
        posterior = self.autoencoder.encode(image).latent_dist
        return posterior.mean * self.scaling_factor, posterior.logvar

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image in (about) [-1, 1]."""
        chunks = self.cpu_chunks(latent, latent.shape[-2] * latent.shape[-1] * 64)  # the autoencoder's x8
        if len(chunks) > 1:
            return torch.cat([self.decode(chunk) for chunk in chunks])
        # (1 / s) * latent, as the release computes it: bit for bit its decoder input.
        return self.autoencoder.decode((1.0 / self.scaling_factor) * latent).sample

    def cpu_chunks(self, batch: torch.Tensor, pixels: int) -> list[torch.Tensor]:
        """On a CPU, the batch in chunks whose full-resolution activations stay under ``CPU_CHUNK_BYTES``.

        Every sample is computed independently (convolutions, per-sample GroupNorm), so chunking changes
        no arithmetic; on a GPU the batch stays whole.
        """
        if batch.device.type != "cpu" or batch.shape[0] <= 1:
            return [batch]
        widths = self.autoencoder.config.get("block_out_channels") or (128,)
        per_sample = int(widths[0]) * pixels * 4  # float32 activations at full resolution
        size = max(1, CPU_CHUNK_BYTES // per_sample)
        return list(batch.split(size)) if size < batch.shape[0] else [batch]

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the autoencoder as a diffusers folder, so a model folder can carry it for offline use."""
        self.autoencoder.save_pretrained(str(directory))


def load_first_stage(
    source: str | os.PathLike | FirstStageSource | dict,
    config: str | os.PathLike | None = None,
    *,
    base_dir: Path | None = None,
    local_files_only: bool = False,
) -> FirstStage:
    """Load a first stage from any supported source.

    ``source`` is a Hub id (``owner/repo`` or ``owner/repo/subfolder``), a diffusers folder, an LDM
    checkpoint (then ``config`` is its yaml), a TAESD folder, or a :class:`FirstStageSource`.
    """
    spec = source if isinstance(source, FirstStageSource) else None
    if isinstance(source, dict):
        spec = FirstStageSource.from_dict(source)
    if spec is None:
        spec = identify_source(str(source), None if config is None else str(config))
    spec = spec.resolved(base_dir)
    loaders = {"hub": _load_diffusers, "diffusers": _load_diffusers, "ldm": _load_ldm, "taesd": _load_taesd_files}
    if spec.kind not in loaders:
        raise FirstStageError(f"Unknown first-stage kind {spec.kind!r}; expected one of {sorted(loaders)}.")
    return loaders[spec.kind](spec, local_files_only=local_files_only)


def identify_source(text: str, config: str | None = None) -> FirstStageSource:
    """Decide what kind of source a user-given string names, by looking at the file system first."""
    # Absolute paths: the source is stored in model folders that may be used from another directory.
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        if find_taesd_files(path) is not None:
            return FirstStageSource("taesd", str(path))
        if (path / "config.json").is_file():
            return FirstStageSource("diffusers", str(path))
        if (path / "vae" / "config.json").is_file():
            return FirstStageSource("diffusers", str(path), subfolder="vae")
        raise FirstStageError(
            f"First-stage folder {path} holds neither a diffusers config.json (or vae/config.json) nor "
            f"taesd_encoder.* + taesd_decoder.* files. {OFFLINE_HINT}"
        )
    if path.is_file():
        if config is None:
            raise FirstStageError(
                f"{path} is a single checkpoint file: pass its LDM yaml too (--vae-config), e.g. the "
                "release's v2-inference-v-first-stage-VAE.yaml."
            )
        if not Path(config).is_file():
            raise FirstStageError(f"First-stage config {config} does not exist.")
        return FirstStageSource("ldm", str(path), config=str(Path(config).resolve()))
    looks_local = text.startswith((".", "/", "~")) or text.endswith((".ckpt", ".safetensors", ".pth", ".yaml"))
    if looks_local or text.count("/") < 1:
        raise FirstStageError(f"First stage {text!r} is neither an existing path nor a Hub id. {OFFLINE_HINT}")
    owner, repo, *rest = text.split("/")
    return FirstStageSource("hub", f"{owner}/{repo}", subfolder="/".join(rest) or None)


def find_taesd_files(folder: Path) -> tuple[Path, Path] | None:
    """The upstream TAESD encoder/decoder pair in ``folder`` (safetensors preferred), if present."""
    found = []
    for stem in TAESD_FILE_STEMS:
        candidates = [folder / f"{stem}{suffix}" for suffix in TAESD_SUFFIXES]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            return None
        found.append(existing[0])
    return found[0], found[1]


def _load_diffusers(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    from diffusers import AutoencoderKL, AutoencoderTiny

    if spec.kind == "hub" and not local_files_only:
        from ..hub import hub_reachable

        local_files_only = not hub_reachable()  # offline: the local cache or a clear error, no retries
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if spec.subfolder:
        kwargs["subfolder"] = spec.subfolder
    try:
        config = AutoencoderKL.load_config(spec.path, **kwargs)
        cls = AutoencoderTiny if config.get("_class_name") == "AutoencoderTiny" else AutoencoderKL
        autoencoder = cls.from_pretrained(spec.path, **kwargs)
    except (OSError, ValueError) as error:
        where = "the Hugging Face Hub" if spec.kind == "hub" else "disk"
        name = spec.path + (f"/{spec.subfolder}" if spec.subfolder else "")
        raise FirstStageError(
            f"Could not load the first stage {name!r} from {where}: {first_line(error)}\n{OFFLINE_HINT}"
        ) from error
    scale = autoencoder.config.get("scaling_factor", 1.0 if cls is AutoencoderTiny else 0.18215)
    return FirstStage(autoencoder, scale, spec)


def _load_ldm(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    """The release's format: ``{"state_dict": ...}`` with original LDM keys, plus an LDM yaml."""
    import yaml
    from diffusers import AutoencoderKL

    config_path = Path(spec.config or "")
    try:
        ldm_config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FirstStageError(f"Cannot read the first-stage yaml {config_path}: {first_line(error)}") from error
    first_stage_config = find_first_stage_config(ldm_config, config_path)
    state_dict = load_state_dict_safely(spec.path)
    state_dict = state_dict.get("state_dict", state_dict)
    state_dict = {k.removeprefix("first_stage_model."): v for k, v in state_dict.items()}
    # diffusers reads the first-stage config from ``model.params.first_stage_config``; the release's
    # yaml has it at the top level, so wrap it the way a full LDM yaml would hold it.
    wrapped = {"model": {"params": {"first_stage_config": first_stage_config}}}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        wrapped_path = Path(tmp) / "first_stage.yaml"
        wrapped_path.write_text(yaml.safe_dump(wrapped))
        try:
            autoencoder = AutoencoderKL.from_single_file(
                state_dict, original_config=str(wrapped_path), local_files_only=True
            )
        except Exception as error:  # diffusers raises several types for shape/key mismatches
            raise FirstStageError(
                f"{spec.path} does not match the autoencoder described by {config_path}: {first_line(error)}"
            ) from error
    scale = first_stage_config.get("scale_factor", ldm_config.get("scale_factor", 0.18215))
    return FirstStage(autoencoder, scale, spec)


def find_first_stage_config(ldm_config: Any, path: Path) -> dict:
    """Accept the release's top-level ``first_stage_config`` or a full LDM yaml's nested one."""
    if isinstance(ldm_config, dict):
        if "first_stage_config" in ldm_config:
            return ldm_config["first_stage_config"]
        nested = ldm_config.get("model", {}).get("params", {}).get("first_stage_config")
        if nested is not None:
            return nested
    raise FirstStageError(
        f"{path} has no 'first_stage_config' (expected at the top level, as in the release's "
        "v2-inference-v-first-stage-VAE.yaml, or under model.params)."
    )


def _load_taesd_files(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    """Upstream TAESD weights (``nn.Sequential`` indices, often bf16) mapped onto ``AutoencoderTiny``."""
    from diffusers import AutoencoderTiny

    files = find_taesd_files(Path(spec.path))
    if files is None:
        raise FirstStageError(f"No taesd_encoder.* / taesd_decoder.* files in {spec.path}. {OFFLINE_HINT}")
    encoder_file, decoder_file = files
    state_dict = {}
    for key, value in load_state_dict_safely(encoder_file).items():
        state_dict[f"encoder.layers.{key}"] = value.float()
    for key, value in load_state_dict_safely(decoder_file).items():
        index, rest = key.split(".", 1)
        # Upstream's decoder starts with a parameter-free Clamp that diffusers applies in forward().
        state_dict[f"decoder.layers.{int(index) - 1}.{rest}"] = value.float()
    autoencoder = AutoencoderTiny()
    try:
        autoencoder.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise FirstStageError(f"{spec.path}: TAESD files do not match AutoencoderTiny: {first_line(error)}") from error
    return FirstStage(autoencoder, autoencoder.config.scaling_factor, spec)


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights without ever executing code from the file.

    ``.safetensors`` holds no code at all; pickled formats (``.pth``, ``.ckpt``, ``.bin``) go through
    ``torch.load(weights_only=True)``, whose unpickler admits only tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a valid safetensors file ({first_line(error)}).") from error
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for unsafe globals, RuntimeError/EOFError for corrupt files
        unsafe = "unsupported global" in str(error).lower()
        reason = (
            "it contains Python objects beyond tensors, which may execute code when loaded, so it was refused"
            if unsafe
            else f"it is truncated, corrupt or not a PyTorch checkpoint ({type(error).__name__})"
        )
        raise CheckpointError(
            f"Cannot load {path}: {reason}. Re-download the file, or convert a trusted copy to .safetensors."
        ) from error
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, expected a dict of tensors.")
    return loaded


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""Where a first stage comes from, written down so that a model folder can find it again and check it.

A user names a first stage by a string (a Hub id, a folder, a checkpoint + yaml); :func:`identify_source`
turns it into a JSON-able :class:`FirstStageSource`, which records what the loaded first stage reported
(latent width, scale, shift), and a model folder stores that record and refuses a first stage that no longer
matches it. Loading (the adapters, by kind) is :mod:`.loading`'s: this module imports no adapter.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import FirstStageError
from .tiny_files import tiny_file_name, tiny_pairs

#: The paper's first stage: the Stable Diffusion 2 (768-v-ema) VAE. ``owner/repo/subfolder`` syntax.
DEFAULT_VAE = "stabilityai/stable-diffusion-2/vae"
#: The 10 MB tiny autoencoder used by ``gmseg demo`` and CPU configs.
TAESD_HUB_ID = "madebyollin/taesd"
#: Hub ids of the tiny autoencoders (diffusers ``AutoencoderTiny`` repos) and their latent widths, so the
#: kind of such an id is known without the network.
TINY_HUB_IDS = {"madebyollin/taesd": 4, "madebyollin/taesdxl": 4, "madebyollin/taesd3": 16, "madebyollin/taef1": 16}

OFFLINE_HINT = (
    "Pass a local first stage instead: a diffusers folder (with config.json), an LDM checkpoint "
    "'--vae model.ckpt --vae-config v2-inference-v-first-stage-VAE.yaml', or a folder holding "
    "taesd_encoder.safetensors and taesd_decoder.safetensors (or the taesdxl_, taesd3_ or taef1_ pair; "
    "e.g. --vae ../shared/weights/taesd)."
)

#: Source kinds as stored in model folders. ``taesd`` names every upstream tiny-autoencoder folder.
KINDS = ("diffusers", "hub", "ldm", "taesd")
#: What :func:`.loading.load_first_stage` records about the loaded first stage (``FirstStage.describe()``'s numbers).
RECORDED = ("latent_channels", "scaling_factor", "shift_factor")


class Described(Protocol):
    """What a source records and checks: a loaded first stage's ``describe()`` (:class:`.wrapper.FirstStage`)."""

    def describe(self) -> dict[str, Any]: ...


@dataclass
class FirstStageSource:
    """How to obtain a first stage; stored in a model folder's config.

    kind: ``hub`` (Hub id, optional subfolder), ``diffusers`` (local folder), ``ldm`` (checkpoint + yaml)
    or ``taesd`` (folder with upstream tiny-autoencoder files ``<name>_encoder.*`` + ``<name>_decoder.*``:
    taesd, taesdxl, taesd3 or taef1; ``name`` picks the pair). ``latent_channels``, ``scaling_factor`` and
    ``shift_factor`` are what the loaded first stage reported; when present, loading checks them.
    """

    kind: str
    path: str
    subfolder: str | None = None
    config: str | None = None
    name: str | None = None
    latent_channels: int | None = None
    scaling_factor: float | None = None
    shift_factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FirstStageSource:
        known = {f.name for f in fields(cls)}
        problems = [f"'{key}' is missing" for key in ("kind", "path") if key not in data]
        problems += [f"'{key}' is not a source key" for key in sorted(set(data) - known)]
        if problems:
            raise FirstStageError(
                f"Invalid first-stage source {data!r}: {'; '.join(problems)} (valid keys: {sorted(known)})."
            )
        return cls(**data)

    def resolved(self, base: Path | None) -> FirstStageSource:
        """Paths stored relative to a model folder become absolute against it."""
        if self.kind == "hub" or base is None:
            return self

        def absolute(p: str | None) -> str | None:
            if p is None or os.path.isabs(p):
                return p
            return str(Path(base) / p)

        return replace(self, path=absolute(self.path), config=absolute(self.config))

    def recorded(self) -> dict[str, Any]:
        """The recorded description (``latent_channels``, ``scaling_factor``, ``shift_factor``) present."""
        return {key: getattr(self, key) for key in RECORDED if getattr(self, key) is not None}

    def recording(self, first_stage: Described) -> FirstStageSource:
        """This source with ``first_stage``'s width, scale and shift recorded."""
        described = first_stage.describe()
        return replace(self, **{key: described[key] for key in RECORDED})

    def check(self, first_stage: Described) -> None:
        """Refuse a first stage whose width, scale or shift differs from what this source recorded."""
        described = first_stage.describe()
        wrong = []
        for key, expected in self.recorded().items():
            actual = described[key]
            same = actual == expected if key == "latent_channels" else math.isclose(actual, expected, rel_tol=1e-6)
            if not same:
                wrong.append(f"{key} {actual} (recorded: {expected})")
        if wrong:
            name = self.path + (f"/{self.subfolder}" if self.subfolder else "")
            raise FirstStageError(
                f"The first stage {name!r} no longer matches the one this model was trained with: "
                f"{', '.join(wrong)}. A mapping model only works in the latent space it was trained in; "
                "pass that first stage (--vae) or retrain."
            )


def as_source(
    source: str | os.PathLike | FirstStageSource | dict, config: str | os.PathLike | None = None
) -> FirstStageSource:
    """A :class:`FirstStageSource` from whatever a caller passed (a string is identified on disk)."""
    if isinstance(source, FirstStageSource):
        return source
    if isinstance(source, dict):
        return FirstStageSource.from_dict(source)
    return identify_source(str(source), None if config is None else str(config))


def adapter_for(spec: FirstStageSource) -> str:
    """Which adapter ``spec`` will get (``kl``, ``tiny`` or ``ldm``, as ``FirstStage.kind`` names it), decided
    without the network, e.g. to describe a model folder offline.

    Hub ids of the tiny autoencoders are known (``TINY_HUB_IDS``); a diffusers folder says its class in
    its config.json; any other Hub id is taken as an AutoencoderKL until its config says otherwise (loading
    goes by the class the config names: :mod:`.loading`).
    """
    if spec.kind == "ldm":
        return "ldm"
    if spec.kind == "taesd":
        return "tiny"
    if spec.kind == "hub":
        return "tiny" if spec.subfolder is None and spec.path.lower() in TINY_HUB_IDS else "kl"
    config_file = Path(spec.path) / (spec.subfolder or "") / "config.json"
    try:
        class_name = json.loads(config_file.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return "kl"  # the loader names the problem
    return "tiny" if class_name == "AutoencoderTiny" else "kl"


def identify_source(text: str, config: str | None = None) -> FirstStageSource:
    """Decide what kind of source a user-given string names, by looking at the file system first."""
    # Absolute paths: the source is stored in model folders that may be used from another directory.
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        pairs = tiny_pairs(path)
        if len(pairs) == 1:
            return FirstStageSource("taesd", str(path), name=next(iter(pairs)))
        if len(pairs) > 1:
            first = sorted(pairs)[0]
            raise FirstStageError(
                f"{path} holds several tiny autoencoders ({', '.join(sorted(pairs))}): pass the encoder file "
                f"of the one to use, e.g. --vae {pairs[first][0]}"
            )
        if (path / "config.json").is_file():
            return FirstStageSource("diffusers", str(path))
        if (path / "vae" / "config.json").is_file():
            return FirstStageSource("diffusers", str(path), subfolder="vae")
        raise FirstStageError(
            f"First-stage folder {path} holds neither a diffusers config.json (or vae/config.json) nor a "
            f"tiny autoencoder's <name>_encoder.* + <name>_decoder.* files (taesd, taesdxl, taesd3, taef1). "
            f"{OFFLINE_HINT}"
        )
    if path.is_file():
        name = tiny_file_name(Path(text)) if config is None else None
        # The pair's folder as named (not a symlinked file's target folder, which may hold only that file).
        folder = Path(text).expanduser().absolute().parent.resolve()
        if name is not None and name in tiny_pairs(folder):
            return FirstStageSource("taesd", str(folder), name=name)
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

"""Loading a first stage from any source: the one place that dispatches to the adapters.

A source's kind says who reads it: ``ldm`` and ``taesd`` files have their own loaders (:mod:`.ldm`,
:mod:`.tiny`); a Hub id or diffusers folder is read by :mod:`.pretrained` as the class its config names,
and that class picks the wrapper (:mod:`.kl`, :mod:`.tiny`). A new format is one adapter module plus one
line in :data:`FILE_LOADERS` (or :data:`WRAPPERS` for another diffusers autoencoder class).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..errors import FirstStageError
from . import kl, ldm, tiny
from .pretrained import from_pretrained
from .sources import KINDS, FirstStageSource, as_source
from .wrapper import FirstStage

#: Source kind -> the adapter that reads its files: ``load(spec, local_files_only) -> FirstStage``.
FILE_LOADERS: dict[str, Callable[..., FirstStage]] = {"ldm": ldm.load, "taesd": tiny.load}
#: diffusers class a repo's config names -> the adapter that wraps it: ``wrap(autoencoder, spec)``.
WRAPPERS: dict[str, Callable[[nn.Module, FirstStageSource], FirstStage]] = {
    "AutoencoderKL": kl.wrap,
    "AutoencoderTiny": tiny.wrap,
}


def load_first_stage(
    source: str | os.PathLike | FirstStageSource | dict,
    config: str | os.PathLike | None = None,
    *,
    base_dir: Path | None = None,
    local_files_only: bool = False,
) -> FirstStage:
    """Load a first stage from any supported source.

    ``source`` is a Hub id (``owner/repo`` or ``owner/repo/subfolder``), a diffusers folder, an LDM
    checkpoint (then ``config`` is its yaml), a tiny-autoencoder folder or encoder file, or a
    :class:`FirstStageSource` (or its dict). The returned first stage's ``source`` records its latent
    width, scale and shift; a source that already records them must match them.
    """
    spec = as_source(source, config).resolved(base_dir)
    if spec.kind not in KINDS:
        raise FirstStageError(f"Unknown first-stage kind {spec.kind!r}; expected one of {sorted(KINDS)}.")
    first_stage = load_spec(spec, local_files_only)
    spec.check(first_stage)
    first_stage.source = spec.recording(first_stage)
    return first_stage


def load_spec(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    """The adapter of ``spec``'s kind, or for a diffusers repo the wrapper of the class its config names."""
    if spec.kind in FILE_LOADERS:
        return FILE_LOADERS[spec.kind](spec, local_files_only=local_files_only)
    autoencoder = from_pretrained(spec, local_files_only=local_files_only, classes=tuple(WRAPPERS))
    return WRAPPERS[type(autoencoder).__name__](autoencoder, spec)

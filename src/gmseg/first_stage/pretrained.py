"""Reading a diffusers repo (a Hub id or a diffusers folder) as the autoencoder class its config names.

Shared by every adapter whose first stage is a diffusers repo (:mod:`.kl`, :mod:`.tiny`): which adapter
wraps the result is decided by its class, in one place (:mod:`.loading`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from torch import nn

from ..errors import FirstStageError
from ..hub import hub_reachable, quiet_hub_deprecations, unavailable_reason
from .sources import OFFLINE_HINT, FirstStageSource
from .weights import first_line

#: The class of a repo whose config names none of the known ones (diffusers' usual autoencoder).
DEFAULT_CLASS = "AutoencoderKL"


def from_pretrained(
    spec: FirstStageSource, local_files_only: bool = False, classes: Collection[str] = (DEFAULT_CLASS,)
) -> nn.Module:
    """``from_pretrained`` on a Hub id (offline: straight to the local cache) or a diffusers folder.

    The config's ``_class_name`` picks the diffusers class among ``classes`` (else :data:`DEFAULT_CLASS`);
    it is read first (``load_config``) for every source, so an offline Hub id fails at that one call.
    """
    import diffusers

    if spec.kind == "hub" and not local_files_only:
        local_files_only = not hub_reachable()  # offline: the local cache or a clear error, no retries
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if spec.subfolder:
        kwargs["subfolder"] = spec.subfolder
    try:
        with quiet_hub_deprecations():
            config = diffusers.AutoencoderKL.load_config(spec.path, **kwargs)
            name = config.get("_class_name")
            cls = getattr(diffusers, name if name in classes else DEFAULT_CLASS)
            return cls.from_pretrained(spec.path, **kwargs)
    except (OSError, ValueError) as error:
        where = "the Hugging Face Hub" if spec.kind == "hub" else "disk"
        name = spec.path + (f"/{spec.subfolder}" if spec.subfolder else "")
        offline = unavailable_reason(name) if spec.kind == "hub" else None
        raise FirstStageError(
            f"Could not load the first stage {name!r} from {where}: {offline or first_line(error)}\n{OFFLINE_HINT}"
        ) from error

"""The frozen first stage: every way to obtain an autoencoder, behind one interface.

GMS never trains the autoencoder; it only needs ``encode`` (image -> scaled latent mean and log-variance)
and ``decode`` (scaled latent -> image). Users arrive with very different files: a Hub id, a diffusers
folder, the release's original LDM checkpoint plus yaml, or the tiny autoencoders' upstream weights. All of
them become a :class:`FirstStage`, and a small JSON-able *source* records how to get it back (and its
latent width, scale and shift), so a saved GMS model folder can rebuild and check its first stage without
the user repeating themselves.

One module per adapter: ``kl`` (diffusers AutoencoderKL), ``tiny`` (AutoencoderTiny: taesd, taesdxl,
taesd3, taef1), ``ldm`` (LDM checkpoint + yaml). Below them: ``sources`` identifies and records a source
(no adapter imported), ``wrapper`` holds :class:`FirstStage`, ``pretrained`` reads a diffusers repo,
``tiny_files`` names the upstream tiny files, ``weights`` reads weight files safely. Above them, ``loading``
dispatches a source to its adapter.
"""

from .loading import load_first_stage
from .sources import DEFAULT_VAE, TAESD_HUB_ID, FirstStageSource, identify_source
from .weights import load_state_dict_safely
from .wrapper import FirstStage

__all__ = [
    "DEFAULT_VAE",
    "TAESD_HUB_ID",
    "FirstStage",
    "FirstStageSource",
    "identify_source",
    "load_first_stage",
    "load_state_dict_safely",
]

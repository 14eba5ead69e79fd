"""The frozen first stage: every way to obtain an autoencoder, behind one interface.

GMS never trains the autoencoder; it only needs ``encode`` (image -> scaled latent mean and log-variance)
and ``decode`` (scaled latent -> image). Users arrive with very different files: a Hub id, a diffusers
folder, the release's original LDM checkpoint plus yaml, or the tiny autoencoders' upstream weights. All of
them become a :class:`FirstStage`, and a small JSON-able *source* records how to get it back (and its
latent width, scale and shift), so a saved GMS model folder can rebuild and check its first stage without
the user repeating themselves.

One module per adapter: ``kl`` (diffusers AutoencoderKL), ``tiny`` (AutoencoderTiny: taesd, taesdxl,
taesd3, taef1), ``ldm`` (LDM checkpoint + yaml); ``sources`` identifies, loads and records; ``wrapper``
holds :class:`FirstStage`; ``weights`` reads weight files safely.
"""

from .sources import DEFAULT_VAE, TAESD_HUB_ID, FirstStageSource, identify_source, load_first_stage
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

"""gmseg: Generative Medical Segmentation (GMS, Huo et al., AAAI 2025).

A frozen Stable Diffusion autoencoder maps images and masks to latents; a small latent mapping model
learns image latent -> mask latent. Import the pieces from their modules, e.g.
``from gmseg.models import GMS``.
"""

__version__ = "0.1.0"

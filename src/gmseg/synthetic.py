"""Synthetic breast-ultrasound images with lesion masks, for ``gmseg demo`` and tests.

Why synthetic: the demo must run offline, in minutes, on a CPU, without a licensed dataset, yet still
exercise the same pipeline (PNG images + binary masks + split) as real data such as BUSI. So the
images imitate what makes ultrasound segmentation hard: multiplicative speckle everywhere (the lesion
included), depth attenuation, layered tissue that is itself partly dark, and only a moderate
lesion/tissue contrast. A small model still learns it (Dice > 0.8) because the lesion is one smooth,
star-shaped, hypoechoic region.

Everything is drawn from one ``numpy.random.Generator`` so a seed fixes the dataset, and every step is
whole-array numpy (noise is shaped in the Fourier domain) so 100 images of 224x224 take well under 2 s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gmseg.errors import ConfigError
from gmseg.fileio import atomic_write_text

__all__ = ["synthetic_pair", "make_synthetic_dataset"]

# Lesion area as a fraction of the image; drawn inside the 3%..25% promised by the API with a margin,
# because the pixelised area differs slightly from the analytic one.
_AREA_RANGE = (0.04, 0.20)
# Smallest gap (pixels, at size 224) kept between the lesion and every image border.
_BORDER_MARGIN = 6.0


def _freq_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared frequencies (cycles/pixel) along y and x for ``rfft2`` (all fields here are real)."""
    return (np.fft.fftfreq(size) ** 2)[:, None], (np.fft.rfftfreq(size) ** 2)[None, :]


def _blur(field: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Periodic blur of a real field by a Fourier-domain transfer function (half spectrum)."""
    return np.fft.irfft2(np.fft.rfft2(field) * transfer, s=field.shape)


def _gaussian_transfer(fy2: np.ndarray, fx2: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Fourier transform of a Gaussian blur; filtering by multiplication avoids large spatial kernels."""
    return np.exp(-2.0 * np.pi**2 * (sigma_y**2 * fy2 + sigma_x**2 * fx2))


def _smooth_noise(
    rng: np.random.Generator, size: int, sigma_y: float, sigma_x: float, fy2: np.ndarray, fx2: np.ndarray
) -> np.ndarray:
    """Zero-mean, unit-std correlated Gaussian noise (periodic, which is invisible for texture)."""
    white = rng.standard_normal((size, size))
    field = _blur(white, _gaussian_transfer(fy2, fx2, sigma_y, sigma_x))
    return (field - field.mean()) / (field.std() + 1e-12)


def _smooth_1d(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-std smooth 1-D noise, used for wavy layer boundaries and lateral gain changes."""
    f = np.fft.rfftfreq(n)
    sig = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * np.exp(-2.0 * np.pi**2 * sigma**2 * f**2), n)
    return (sig - sig.mean()) / (sig.std() + 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _tissue(rng: np.random.Generator, size: int, yy: np.ndarray, fy2: np.ndarray, fx2: np.ndarray) -> np.ndarray:
    """Echogenicity (backscatter power, ~0..1) of layered breast tissue without the lesion.

    Layers top to bottom: bright skin line, dark subcutaneous fat crossed by bright oblique Cooper's
    ligaments, bright heterogeneous fibroglandular tissue, then striated pectoral muscle. Boundaries
    wave laterally so a model cannot find the lesion from depth alone, and the dark fat layer gives it
    lesion-like distractors.
    """
    s = size / 224.0
    d = yy / size  # depth in [0, 1)
    skin_end = rng.uniform(0.025, 0.045) + 0.006 * _smooth_1d(rng, size, 30 * s)[None, :]
    fat_end = rng.uniform(0.18, 0.32) + 0.035 * _smooth_1d(rng, size, 25 * s)[None, :]
    gland_end = rng.uniform(0.72, 0.88) + 0.04 * _smooth_1d(rng, size, 35 * s)[None, :]
    w = 0.012  # boundary softness in depth units

    skin, fat, gland, muscle = (
        rng.uniform(0.85, 1.0),
        rng.uniform(0.07, 0.15),
        rng.uniform(0.6, 0.9),
        rng.uniform(0.18, 0.32),
    )
    in_skin = _sigmoid((skin_end - d) / (w * 0.5))
    below_fat = _sigmoid((d - fat_end) / w)
    below_gland = _sigmoid((d - gland_end) / w)
    echo = skin * in_skin + (1 - in_skin) * (fat + (gland - fat) * below_fat + (muscle - gland) * below_gland)

    # Horizontal streaks (tissue planes) everywhere, strongest as striations in the muscle.
    streak = _smooth_noise(rng, size, 1.2 * s, 10 * s, fy2, fx2)
    echo = echo * np.exp((0.15 + 0.2 * below_gland) * streak)
    # Patchy glandular heterogeneity on a larger scale.
    patches = _smooth_noise(rng, size, 7 * s, 11 * s, fy2, fx2)
    echo = echo * np.exp(0.28 * patches * below_fat)
    # Cooper's ligaments: thin bright ridges of a slanted, low-frequency field inside the fat.
    lig = _smooth_noise(rng, size, 9 * s, 12 * s, fy2, fx2)
    ridges = np.exp(-((lig / 0.15) ** 2))
    echo = echo + 0.3 * ridges * (1 - below_fat) * (1 - in_skin)
    return np.clip(echo, 0.02, None)


def _lesion_shape(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Signed distance-like field (about pixels, negative inside) of one irregular lesion.

    Boundary: r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k)) on an ellipse, rotated. A few
    low harmonics give lobulated but smooth margins; the shape stays star-shaped, hence one connected
    region. r0 is solved from a drawn target area so the area fraction is controlled, not left to luck.
    """
    n_harm = int(rng.integers(2, 6))
    ks = np.arange(2, 2 + n_harm)
    amps = rng.uniform(0.0, 1.0, n_harm) * rng.uniform(0.05, 0.22) / np.sqrt(ks - 1)
    phases = rng.uniform(0.0, 2.0 * np.pi, n_harm)
    theta_s = np.linspace(0.0, 2.0 * np.pi, 720, endpoint=False)
    rho_s = 1.0 + (amps[:, None] * np.cos(ks[:, None] * theta_s[None, :] + phases[:, None])).sum(0)
    rho_s = np.maximum(rho_s, 0.35)
    # Ultrasound lesions are mostly wider than tall (benign) with some taller (malignant): axes ratio.
    ratio = rng.uniform(0.5, 1.0)
    a, b = 1.0 / np.sqrt(ratio), np.sqrt(ratio)  # unit-area ellipse scaling
    angle = rng.normal(0.0, 0.35) if rng.random() < 0.8 else rng.uniform(0.0, np.pi)

    target = np.exp(rng.uniform(*np.log(_AREA_RANGE))) * size * size
    unit_area = 0.5 * np.mean(rho_s**2) * 2.0 * np.pi * a * b  # area when r0 == 1
    r0 = np.sqrt(target / unit_area)
    margin = _BORDER_MARGIN * size / 224.0
    extent = r0 * rho_s.max() * a  # conservative half-extent in any direction
    max_extent = 0.5 * size - margin - 1.0
    if extent > max_extent:  # very elongated + lobulated: shrink rather than touch the border
        r0 *= max_extent / extent
        extent = max_extent

    # Centre: anywhere it fits, biased to mid depth where glandular tissue (and real lesions) sit.
    lo, hi = margin + extent, size - margin - extent
    cx = rng.uniform(lo, hi)
    cy = np.clip(rng.normal(0.5 * size, 0.12 * size), lo, hi)

    dx, dy = xx - cx, yy - cy
    c, s_ = np.cos(angle), np.sin(angle)
    u = (c * dx + s_ * dy) / a
    v = (-s_ * dx + c * dy) / b
    rad = np.hypot(u, v)
    # cos(k theta + phi) = Re(e^{i phi} z^k) with z = e^{i theta}: powers of z avoid arctan2 and cos.
    z = (u + 1j * v) / np.maximum(rad, 1e-9)
    zk = z ** int(ks[0])
    rho = np.ones_like(rad)
    for amp, phase in zip(amps, phases):
        rho += amp * (np.exp(1j * phase) * zk).real
        zk = zk * z
    rho = np.maximum(rho, 0.35) * r0
    # a * b == 1, so the radial gap is roughly in pixels and edge widths below can be set in pixels.
    return rad - rho


def synthetic_pair(rng: np.random.Generator, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """One breast-ultrasound-like image and its lesion mask.

    Returns ``image`` (size, size, 3) uint8 RGB with the grey level replicated (the pipeline, like
    real BUSI PNGs, expects 3 channels) and ``mask`` (size, size) uint8 in {0, 1}, which is exactly the
    lesion region used to darken the image (the image edge is softened, the mask is its 0.5 level).
    The lesion covers ~3-25% of the image and never touches a border.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ConfigError(f"synthetic image size must be an integer >= 32 pixels, got {size!r}")
    size = int(size)
    s = size / 224.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    fy2, fx2 = _freq_grid(size)

    echo = _tissue(rng, size, yy, fy2, fx2)
    sdist = _lesion_shape(rng, size, yy, xx)
    mask = (sdist <= 0.0).astype(np.uint8)

    # Hypoechoic lesion: moderate contrast, soft 1-2 px edge, faint internal echoes.
    edge = rng.uniform(0.8, 2.0) * s
    inside = _sigmoid(-sdist / (edge * 0.5))
    # Lesion power relative to tissue, about -5 to -12 dB: hypoechoic as most BUSI lesions, some subtle.
    contrast = rng.uniform(0.06, 0.3)
    internal = np.exp(0.35 * _smooth_noise(rng, size, 3 * s, 3 * s, fy2, fx2))
    lesion_level = contrast * np.median(echo[mask.astype(bool)]) * internal
    echo = echo * (1 - inside) + lesion_level * inside

    # Optional echogenic rim (halo) just outside the boundary; kept outside so the mask stays exact.
    if rng.random() < 0.45:
        rim_w = rng.uniform(1.5, 3.5) * s
        halo = np.exp(-(((sdist - rim_w) / rim_w) ** 2)) * (1 - inside)
        echo = echo * (1.0 + rng.uniform(0.4, 1.2) * halo)

    # Posterior acoustic feature below the lesion: enhancement (cysts) or shadowing (solid masses).
    p = rng.random()
    if p < 0.7:
        gain = rng.uniform(1.3, 1.9) if p < 0.38 else rng.uniform(0.35, 0.7)
        has = mask.any(axis=0)
        # Columns behind the lesion, softened laterally (beam width) to avoid a hard-edged stripe.
        taper = np.exp(-2.0 * np.pi**2 * (3.0 * s) ** 2 * np.fft.rfftfreq(size) ** 2)
        cols = np.clip(np.fft.irfft(np.fft.rfft(has.astype(np.float64)) * taper, size), 0.0, 1.0)
        # Lesion bottom per column, extended sideways so the softened columns have a start depth too.
        idx = np.flatnonzero(has)
        last_row = size - 1 - np.argmax(mask[::-1, idx], axis=0)
        bottom = np.interp(np.arange(size), idx, last_row.astype(np.float64))
        below = _sigmoid((yy - bottom[None, :]) / (2.0 * s))
        fade = np.exp(-np.clip(yy - bottom[None, :], 0, None) / (rng.uniform(0.25, 0.8) * size))
        echo = echo * (1.0 + (gain - 1.0) * cols[None, :] * below * fade * (1 - inside))

    # Depth attenuation (imperfectly compensated by TGC) and slight lateral gain fall-off at the edges.
    alpha = rng.uniform(0.5, 1.4)
    lateral = 1.0 - rng.uniform(0.0, 0.25) * ((xx[0] / (size - 1) - 0.5) * 2.0) ** 4
    echo = echo * np.exp(-alpha * yy / size) * lateral[None, :]

    # Speckle: complex Gaussian scatterers blurred by an anisotropic PSF (wider laterally) give a
    # Rayleigh envelope with grains of a few pixels; amplitude scales with sqrt(backscatter power).
    psf = _gaussian_transfer(fy2, fx2, rng.uniform(0.9, 1.2) * s, rng.uniform(1.5, 2.2) * s)
    real, imag = rng.standard_normal((2, size, size))
    env = np.hypot(_blur(real, psf), _blur(imag, psf))
    env /= np.sqrt(np.mean(env**2))
    amp = np.sqrt(echo) * env

    # Display compression to 8 bits: a power law (milder than a pure log) keeps speckle visible but
    # lets tissue structure dominate, and a dark background as on real B-mode screens.
    power = rng.uniform(0.55, 0.75)
    disp = amp**power
    # Slight display blur (scan conversion) so single-pixel holes do not dominate the look.
    disp = _blur(disp, _gaussian_transfer(fy2, fx2, 0.7 * s, 0.7 * s))
    grey = np.clip(disp / (np.percentile(disp, 99.7) * rng.uniform(0.9, 1.1)), 0.0, 1.0)
    img8 = np.round(grey * 255.0).astype(np.uint8)
    return np.repeat(img8[:, :, None], 3, axis=2), mask


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    n_train: int = 64,
    n_test: int = 16,
    size: int = 224,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset in the on-disk layout that real datasets use.

    Layout: ``images/case_000.png`` (RGB), ``masks/case_000.png`` (8-bit L, 0/255) and ``split.json``
    ``{"train": [...], "test": [...]}`` (names without suffix). Case ``i`` is drawn from its own child
    seed, so it is the same image whatever ``n_train``/``n_test`` are. Files with the same names are
    overwritten; each is written atomically. Returns ``out_dir`` as a Path.
    """
    for name, val, lo in (("n_train", n_train, 1), ("n_test", n_test, 0), ("size", size, 32)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ConfigError(f"synthetic dataset: {name} must be an integer >= {lo}, got {val!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)

    n = int(n_train) + int(n_test)
    width = max(3, len(str(n - 1)))
    names = [f"case_{i:0{width}d}" for i in range(n)]
    from gmseg.data.io import write_image_png, write_mask_png  # lazy: importing gmseg.data loads torch
    from gmseg.data.readers import OUTPUT_2D_SUFFIX

    children = np.random.SeedSequence(int(seed)).spawn(n)
    for name, child in zip(names, children):
        image, mask = synthetic_pair(np.random.default_rng(child), size=int(size))
        write_image_png(out / "images" / f"{name}{OUTPUT_2D_SUFFIX}", image)
        write_mask_png(out / "masks" / f"{name}{OUTPUT_2D_SUFFIX}", mask)
    split = {"train": names[: int(n_train)], "test": names[int(n_train) :]}
    atomic_write_text(out / "split.json", json.dumps(split, indent=2) + "\n")
    return out

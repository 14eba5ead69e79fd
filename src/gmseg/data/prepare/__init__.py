"""Converters from the public datasets' download layouts (and a user's own folders) to the package layout.

Output, for every source: ``out/images/NAME.png`` (RGB), ``out/masks/NAME.png`` (0/255 grayscale),
``out/split.json`` and ``out/dataset.json`` (nnU-Net's convention: ``name``, ``labels``, ``numTraining``,
``file_ending``; binary: background 0 and the dataset's foreground, e.g. lesion, 1). Names follow the
paper's split files (e.g. ``benign_1``, ``testA_1``, ``ISIC_0024306``), so the release's splits apply
unchanged. With ``labels="pathology"`` (BUSI and BUS) the masks are 3-class palette PNGs instead: background
0, benign 1, malignant 2, each lesion's pixels set to its case's pathology (BUSI: the class folder / file
name; BUS: ``DatasetB.csv``'s ``Type``).

Nothing is written unless every pair is readable and image/mask sizes agree. The dataset is written into a
hidden sibling folder and renamed into place when complete, so an interrupted or failed run leaves the
previous state untouched; a non-empty ``out`` is replaced only with ``overwrite``, and an input folder inside
``out`` is always refused. Masks are read by the one rule of :func:`gmseg.data.io.inspect_mask`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gmseg.bounds import check_mask_threshold
from gmseg.data.prepare import bus, busi, glas, ham10000, kvasir_instrument
from gmseg.data.prepare.engine import (
    PATHOLOGY,
    Layout,
    PrepareReport,
    _convert,
    _existing_dir,
    check_output_folder,
    write_dataset_json,
)
from gmseg.data.prepare.folders import prepare_folders
from gmseg.errors import ConfigError

__all__ = [
    "DATASETS",
    "FOREGROUND",
    "LABEL_SCHEMES",
    "LAYOUTS",
    "PATHOLOGY",
    "Layout",
    "PrepareReport",
    "check_output_folder",
    "prepare_dataset",
    "prepare_folders",
    "write_dataset_json",
]

#: The public datasets' layouts by command-line name: one module each, one line here.
LAYOUTS: dict[str, Layout] = {
    layout.name: layout for layout in (busi.LAYOUT, bus.LAYOUT, glas.LAYOUT, ham10000.LAYOUT, kvasir_instrument.LAYOUT)
}
#: name -> the function finding its pairs (the registry as the rest of gmseg has always read it).
DATASETS = {name: layout.collect for name, layout in LAYOUTS.items()}
#: The name of the foreground class in each binary dataset's dataset.json.
FOREGROUND: dict[str, str] = {**{name: layout.foreground for name, layout in LAYOUTS.items()}, "folders": "foreground"}
#: ``labels`` values of :func:`prepare_dataset` -> the datasets that support them -> the labeller.
LABEL_SCHEMES = {
    scheme: {name: layout.labellers[scheme] for name, layout in LAYOUTS.items() if scheme in layout.labellers}
    for scheme in sorted({scheme for layout in LAYOUTS.values() for scheme in layout.labellers})
}


def prepare_dataset(
    name: str,
    raw: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    mask_threshold: float | None = None,
    overwrite: bool = False,
    labels: str | None = None,
) -> PrepareReport:
    """Convert the public dataset ``name`` from its download folder ``raw`` into ``out``.

    ``split``: the release's .pkl or a .json; names without data are reported in ``unmatched``.
    Without it a seeded random train/test split is made. ``mask_threshold`` (fraction of full scale)
    replaces the mask rule's "non-zero is lesion" (see :func:`gmseg.data.io.inspect_mask`); ``overwrite``
    lets a complete new dataset replace a non-empty ``out``. ``labels``: None for binary masks, or
    ``"pathology"`` (busi, bus) for 3-class masks (:data:`PATHOLOGY`).
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    mask_threshold = check_mask_threshold(mask_threshold)
    labeller = _labeller(key, labels)
    raw_dir = _existing_dir(raw, "raw dataset")
    out_dir = Path(out)
    check_output_folder(out_dir, [raw_dir], overwrite)
    unmatched: list[str] = []
    pairs = DATASETS[key](raw_dir, out_dir.resolve(), unmatched)
    label_set = None
    if labeller is not None:
        labeller(pairs, raw_dir, out_dir.resolve())
        label_set = PATHOLOGY
    return _convert(
        key, pairs, unmatched, out_dir, split, test_fraction, seed, raw_dir, mask_threshold, label_set,
        foreground=LAYOUTS[key].foreground,
    )  # fmt: skip


def _labeller(dataset: str, labels: str | None) -> Callable[..., None] | None:
    """The function that gives each case its class for ``labels`` (None: binary); refuses what does not fit."""
    if labels is None:
        return None
    scheme = LABEL_SCHEMES.get(str(labels).lower())
    if scheme is None:
        raise ConfigError(f"unknown labels {labels!r}; valid: {sorted(LABEL_SCHEMES)} (or none, for binary masks)")
    if dataset not in scheme:
        raise ConfigError(
            f"labels {labels!r} is available for {sorted(scheme)}, not {dataset!r}; leave it out for binary masks"
        )
    return scheme[dataset]

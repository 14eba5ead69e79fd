"""A user's own image and mask folders, paired by a case key between each side's prefix and suffix."""

from __future__ import annotations

import os
from pathlib import Path

from gmseg.bounds import check_mask_threshold
from gmseg.data.io import (
    is_image_file,
)
from gmseg.data.prepare.engine import (
    PrepareReport,
    _convert,
    _existing_dir,
    _index,
    _Pair,
    _pair,
    _stem,
    check_output_folder,
)
from gmseg.errors import ConfigError, DataError


def prepare_folders(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mask_suffix: str = "",
    split: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    mask_threshold: float | None = None,
    overwrite: bool = False,
    mask_prefix: str = "",
    image_prefix: str = "",
    image_suffix: str = "",
) -> PrepareReport:
    """Convert a user's own image and mask folders, paired by a case key: the stem without its prefix and
    suffix on each side (image stem = image_prefix + KEY + image_suffix, mask stem = mask_prefix + KEY +
    mask_suffix). Output files keep the image's stem.

    Any supported format on either side (e.g. IMD002.jpg with IMD002_lesion.bmp: ``mask_suffix="_lesion"``;
    bus_0001-l.png with mask_0001-l.png: ``image_prefix="bus_", mask_prefix="mask_"``). Images and masks
    may share one folder when the affixes tell them apart. How many pairs matched is said (on stderr)
    before anything is written.
    """
    mask_threshold = check_mask_threshold(mask_threshold)
    image_dir = _existing_dir(images, "images")
    mask_dir = _existing_dir(masks, "masks")
    check_output_folder(Path(out), [image_dir, mask_dir], overwrite)
    same = image_dir.resolve() == mask_dir.resolve()
    image_affix, mask_affix = (image_prefix, image_suffix), (mask_prefix, mask_suffix)
    if same and image_affix == mask_affix:
        raise ConfigError(
            "images and masks are in the same folder: set mask_suffix or mask_prefix (e.g. '_mask') to tell them apart"
        )
    unmatched: list[str] = []

    def key(p: Path, affix: tuple[str, str], other: tuple[str, str], what: str) -> str | None:
        stem = _stem(p)
        found, theirs = _strip(stem, affix), _strip(stem, other)
        if same and theirs is not None and (found is None or len("".join(other)) > len("".join(affix))):
            return None  # the other kind's file, in the shared folder (the more specific affix decides)
        if found is None and not same:
            unmatched.append(f"{p} ({what} file name lacks prefix {affix[0]!r} / suffix {affix[1]!r})")
        return found

    image_files = [p for p in sorted(image_dir.iterdir()) if p.is_file() and is_image_file(p)]
    mask_files = [p for p in sorted(mask_dir.iterdir()) if p.is_file() and is_image_file(p)]
    image_index = _index(image_files, lambda p: key(p, image_affix, mask_affix, "image"), unmatched)
    mask_index = _index(mask_files, lambda p: key(p, mask_affix, image_affix, "mask"), unmatched)
    pairs = _pair(image_index, mask_index, unmatched)
    for pair in pairs:  # the output keeps the image's own name
        pair.name = _stem(pair.image)
    _say_matched(pairs, image_index, mask_index, image_affix, mask_affix)
    return _convert("folders", pairs, unmatched, Path(out), split, test_fraction, seed, image_dir, mask_threshold)


def _strip(stem: str, affix: tuple[str, str]) -> str | None:
    """The key of ``stem`` = prefix + KEY + suffix, or None when the stem does not have that form."""
    prefix, suffix = affix
    if not (stem.startswith(prefix) and stem.endswith(suffix) and len(stem) > len(prefix) + len(suffix)):
        return None
    return stem[len(prefix) : len(stem) - len(suffix)]


def _say_matched(
    pairs: list[_Pair],
    images: dict[str, Path],
    masks: dict[str, Path],
    image_affix: tuple[str, str],
    mask_affix: tuple[str, str],
) -> None:
    """How many pairs matched, before anything is converted; no pair at all is an error with the rule used."""
    import sys

    rule = f"image = {image_affix[0]!r} + KEY + {image_affix[1]!r}, mask = {mask_affix[0]!r} + KEY + {mask_affix[1]!r}"
    if not pairs and images and masks:
        example_image, example_mask = next(iter(images.values())), next(iter(masks.values()))
        raise DataError(
            f"no image/mask pair matched by the rule {rule}; nothing was written",
            [
                f"e.g. image {example_image.name} and mask {example_mask.name}: set --image-prefix/--mask-prefix "
                "and --mask-suffix so that both leave the same KEY"
            ],
        )
    print(
        f"prepare folders: {len(pairs)} image/mask pair(s) matched ({rule}); {len(images) - len(pairs)} image(s) "
        f"and {len(masks) - len(pairs)} mask(s) without a partner",
        file=sys.stderr,
    )

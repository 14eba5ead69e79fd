"""Data: on-disk layout, split files, image/mask reading and validation, augmentation, converters.

Everything public is re-exported here, e.g. ``from gmseg.data import SegmentationDataset, load_split``.
"""

from gmseg.data.dataset import SegmentationDataset, check_dataset, list_names
from gmseg.data.io import (
    IMAGE_SUFFIXES,
    find_file,
    index_folder,
    read_image,
    read_mask,
    read_size,
    split_name,
    write_image_png,
    write_mask_png,
)
from gmseg.data.prepare import DATASETS, PrepareReport, prepare_dataset, prepare_folders
from gmseg.data.splits import load_split, random_split, save_split, validate_split, with_validation
from gmseg.data.transforms import RELEASE_AUGMENTATIONS, build_transform

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "RELEASE_AUGMENTATIONS",
    "PrepareReport",
    "SegmentationDataset",
    "build_transform",
    "check_dataset",
    "find_file",
    "index_folder",
    "list_names",
    "load_split",
    "prepare_dataset",
    "prepare_folders",
    "random_split",
    "read_image",
    "read_mask",
    "read_size",
    "save_split",
    "split_name",
    "validate_split",
    "with_validation",
    "write_image_png",
    "write_mask_png",
]

"""Does the first stage commute with flips and 90-degree rotations? encode(turn(x)) against turn(encode(x)).

The cached-view schedules (``trainer.latent_epochs``, ``trainer.cached_full_loss``) augment by turning the
cached latents instead of re-encoding turned images. That is only the same augmentation if the encoder
commutes with the turn. This measures, on real images and masks at the model's input size, the relative
error ||encode(turn(x)) - turn(encode(x))|| / ||encode(x)|| for the 7 non-identity flips/rot90:

    python bench/latent_equivariance.py --vae ../shared/weights/taesd --data ../shared/data/busi \
        --split ../shared/data/busi/busi_train_test_names.pkl --count 16 --out bench/results/busi/taesd-equivariance.json

An error near 0 says turning latents is a faithful augmentation; an error near 1 (the size of the latent
itself) says a turned latent is not what any real image encodes to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import common


def turns() -> list[tuple[str, int, bool]]:
    """The 7 non-identity elements of the square's symmetry group: rot90 k times, then maybe a flip."""
    return [
        (f"rot{90 * k}" + ("+flip" if flip else ""), k, flip) for k in range(4) for flip in (False, True) if k or flip
    ]


def turn(tensor: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    turned = torch.rot90(tensor, k, dims=(-2, -1))
    return torch.flip(turned, dims=(-1,)) if flip else turned


def relative_errors(encode, batch: torch.Tensor) -> dict[str, float]:
    """Per turn, ||encode(turn(x)) - turn(encode(x))|| / ||encode(x)|| over the whole batch."""
    with torch.no_grad():
        reference = encode(batch)
        return {
            name: float((encode(turn(batch, k, flip)) - turn(reference, k, flip)).norm() / reference.norm())
            for name, k, flip in turns()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_first_stage_data_arguments(parser, stage="train")
    parser.add_argument("--count", type=int, default=16, help="how many images (the first names of the stage)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    from gmseg.config import config_from_dict
    from gmseg.data.dataset import list_names
    from gmseg.data.splits import load_split
    from gmseg.first_stage import load_first_stage
    from gmseg.models.gms import mask_to_image
    from gmseg.training import make_dataset

    names = list(load_split(args.split)[args.stage]) if args.split else list_names(args.data)
    names = names[: args.count]
    config = config_from_dict({"data": {"root": str(args.data), "image_size": args.size}})
    dataset = make_dataset(config, names, augment=False)  # the training pipeline's own reading and resizing
    items = [dataset[i] for i in range(len(names))]
    images = torch.stack([item["image"] for item in items]) * 2 - 1
    masks = mask_to_image(torch.stack([item["mask"] for item in items]))
    first_stage = load_first_stage(args.vae, args.vae_config)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return first_stage.encode(x)[0]

    result = {
        "vae": args.vae,
        "data": str(args.data),
        "images": len(names),
        "size": args.size,
        "relative_error": {"image": relative_errors(encode, images), "mask": relative_errors(encode, masks)},
    }
    print(f"||encode(turn(x)) - turn(encode(x))|| / ||encode(x)||, {len(names)} images of {args.data} at {args.size}px")
    print(f"{'turn':<14}{'image':>8}{'mask':>8}")
    for name, _, _ in turns():
        print(
            f"{name:<14}{result['relative_error']['image'][name]:>8.3f}{result['relative_error']['mask'][name]:>8.3f}"
        )
    if args.out:
        from gmseg.fileio import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

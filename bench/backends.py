"""Backends: the same model on torch, ONNX Runtime and OpenVINO, each precision each supports, side by side.

    python bench/backends.py                                  # GMS-TAESD and the U-Net at 224, CPU
    python bench/backends.py --models gms-taesd --size 128 --images 16
    python bench/backends.py --models gms-sd-vae --device cuda --compile
    python bench/backends.py --model runs/busi/checkpoints/best --data data/busi   # + paired dDice on the test split

For each model it writes the torch model folder's ONNX and OpenVINO exports (``gmseg export``, verified
against torch; fp32, and int8 calibrated on ``--calibration-size`` training images: those of ``--data``'s
training split when given, else seeded synthetic ones that are not the timed images), then times every
variant (``torch`` fp32 / bf16 / channels-last / compile, ``onnxruntime`` fp32 / int8, ``openvino`` fp32 /
bf16 / int8) in its own process (peak memory is its own), one at a time, round-robin,
``--rounds`` times, on the same ``--images`` ultrasound-like images; the best round counts. Columns:
images/s, x torch fp32, max |dprob| (largest probability difference to torch fp32 on the same images and
weights), peak memory (CUDA allocator peak, or the process's peak RSS on a CPU).

Without ``--model`` the models have seeded random weights (GMS-TAESD: TAESD's real weights when
../shared/weights/taesd exists, a random mapping): speed and |dprob| are those of a trained model, Dice is
meaningless. With ``--model DIR --data DATASET`` that trained model is timed instead, and each variant also
predicts the ``--stage`` images of DATASET and is scored as ``gmseg test`` scores (metrics.csv); dDice is the
paired per-image Dice difference to torch fp32 (mean ± SE, in Dice points). Writes bench/results/backends.json.

DATASET may also be an MSD task folder or an nnU-Net raw dataset of volumes (read in place, as ``gmseg test``
reads it): the cases of ``--stage`` (of ``--split``, e.g. the run's split.json, else the dataset's own split
file; ``--stage all`` every labelled case) are predicted whole by each variant, scored in 3D (metrics.csv, a
row per case) and dDice is paired *per case* on the case's ``mean_dice`` (its mean over foreground classes);
``d_dice_images`` then counts cases. int8 calibrates on slices of the training cases (of ``--split``, as
``gmseg export --calibration DATASET --split``). A 2D nnU-Net dataset is refused: prepare it first.

``release`` (binary GMS models: the release predicts one foreground) is the release's ``valid.py`` loop on the same images and weights (batch 1, the mask
encoded too, all heads; bench/common.py): the ``x release`` column divides by its rate. It predicts no test
images (its probabilities are torch fp32's, which ``max |dprob|`` checks on the timed images).
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that busy-wait at barriers while another job holds the core can make
# a step 10-100x slower; passive waiting keeps every variant honest (as bench/inference.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from gmseg.calibration import CALIBRATION_SIZE  # noqa: E402

#: variant -> (backend, options of make_predictor, the export it reads ("FORMAT" or "FORMAT int8") or None for torch).
VARIANTS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "release": ("release", {}, None),
    "torch fp32": ("torch", {}, None),
    "torch bf16": ("torch", {"precision": "bf16"}, None),
    "torch channels_last": ("torch", {"channels_last": True}, None),
    "torch compile": ("torch", {"compile": True}, None),
    "onnxruntime fp32": ("onnxruntime", {}, "onnx"),
    "onnxruntime int8": ("onnxruntime", {}, "onnx int8"),
    "openvino fp32": ("openvino", {}, "openvino"),
    "openvino bf16": ("openvino", {"precision": "bf16"}, "openvino"),
    "openvino mixed": ("openvino", {"precision": "mixed"}, "openvino"),
    "openvino int8": ("openvino", {}, "openvino int8"),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "torch compile"]
GPU_VARIANTS = ["release", "torch fp32", "torch bf16", "torch channels_last", "torch compile", "onnxruntime fp32"]
MODELS = ("gms-taesd", "gms-sd-vae", "gms-tiny-kl", "unet")
REFERENCE = "torch fp32"


def build_model(name: str, size: int, seed: int = 0) -> torch.nn.Module:
    """A seeded model of the table: GMS on a first stage of bench/common.py, or the U-Net's default widths."""
    if name == "unet":
        from gmseg.models import UNet
        from gmseg.models.unet import DEFAULT_CHANNELS, unet_arguments

        torch.manual_seed(seed)
        return UNet(unet_arguments(DEFAULT_CHANNELS, size)).eval()
    model, _ = common.build_model(name.removeprefix("gms-"), size=size, seed=seed)
    return model


class PeakMemory(common.MemoryMeter):
    """On a CPU, the process's resident-set high-water mark (VmHWM) since ``reset``: ``ru_maxrss`` would carry
    the coordinator's peak into every spawned worker (Linux keeps it across exec), VmHWM starts afresh and
    /proc/self/clear_refs resets it, so each variant's peak is its own run's. CUDA: the allocator's peak."""

    def reset(self) -> None:
        super().reset()
        if self.device.type == "cpu":
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")

    def peak(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            return super().peak()
        with open("/proc/self/status") as handle:
            kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
        return {"peak_mb": round(kib / 1024, 1), "memory_kind": "process peak RSS (VmHWM) during the run"}


class BackendWorker:
    """One (model, variant) in its own process: the torch model rebuilt from its seed (or loaded from a
    folder), or an exported folder, behind :func:`gmseg.inference.make_predictor`."""

    def __init__(self, variant: str, device: str, model: str, size: int, seed: int, folder: str | None):
        from gmseg.inference import make_predictor
        from gmseg.models import load_model

        backend, options, _ = VARIANTS[variant]
        self.device = torch.device(device)
        loaded = load_model(folder) if folder else build_model(model, size, seed)
        self.checksum = common.parameter_checksum(loaded) if VARIANTS[variant][2] is None and not folder else None
        if backend == "release":  # the release's valid.py loop on the same weights
            self.first_stage = loaded.to(self.device).first_stage
            self.mapping = common.ReleaseMappingModel.from_gmseg(loaded.mapping).to(self.device).eval()
        else:
            self.predict = make_predictor(loaded, self.device, backend=backend, **options)
        self.memory = PeakMemory(self.device)

    def info(self) -> dict[str, Any]:
        return {"checksum": self.checksum}

    def run(self, images: torch.Tensor, masks: torch.Tensor, batch: int) -> dict[str, Any]:
        images, masks = images.to(self.device), masks.to(self.device)
        self.memory.reset()

        def work() -> torch.Tensor:
            if hasattr(self, "mapping"):
                return common.release_predict(self.first_stage, self.mapping, images, masks)
            return torch.cat([self.predict(images[s : s + batch]) for s in range(0, len(images), batch)])

        probabilities, seconds, cpu_seconds = common.timed(work, self.device)
        return {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "probabilities": probabilities.cpu(),
            **self.memory.peak(),
        }


def export_dir(root: Path, export: str) -> Path:
    """The folder of one export ("onnx", "openvino int8", ...) under ``root``."""
    return root / export.replace(" ", "-")


def variant_precision(variant: str) -> str:
    """The precision a variant computes in: the runtime's option, or the exported graph's (int8)."""
    _, options, export = VARIANTS[variant]
    return "int8" if export and export.endswith(" int8") else options.get("precision", "fp32")


def calibration_source(args: argparse.Namespace, root: Path) -> Path:
    """What int8 exports calibrate on: ``--data`` (its training split), else synthetic images written once
    (seeded apart from the timed images, so |dprob| is not measured on the calibration images)."""
    if args.data:
        return Path(args.data)
    folder = root / "calibration"
    if not folder.is_dir():
        from gmseg.synthetic import make_synthetic_dataset

        make_synthetic_dataset(folder, n_train=args.calibration_size, n_test=0, size=args.size, seed=args.seed + 1)
    return folder


def export_folders(
    model: torch.nn.Module | Path,
    exports: set[str],
    root: Path,
    calibration: Path,
    calibration_size: int,
    split: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(export -> folder, export -> why refused): the model exported once per export that a chosen variant
    reads; ``gmseg export`` verifies each. An int8 graph beyond its bound is a result (a row saying so), not
    a failure of the benchmark; an fp32 one is a bug and stops it."""
    from gmseg.errors import GmsegError
    from gmseg.export import export_model

    folders, refused = {}, {}
    for export in sorted(exports):
        fmt, _, precision = export.partition(" ")
        int8 = (
            {"calibration": calibration, "calibration_size": calibration_size, "calibration_split": split}
            if precision
            else {}
        )
        try:
            report = export_model(model, export_dir(root, export), fmt, precision=precision or "fp32", **int8)
        except GmsegError as error:
            if not precision:
                raise
            refused[export] = str(error).split(";")[0]
            print(f"  {export}: export refused: {error}", flush=True)
            continue
        print(f"  {report.summary()}", flush=True)
        folders[export] = str(report.folder)
    return folders, refused


def is_volume_data(data: Path) -> bool:
    """Whether ``--data`` is an MSD task or nnU-Net raw dataset of volumes (scored per case in 3D); False for
    a prepared 2D folder. A 2D nnU-Net dataset is refused: its cases are scored here only once prepared."""
    from gmseg.data.layouts import open_layout
    from gmseg.data.volume_dataset import is_volume_layout
    from gmseg.errors import GmsegError

    if not is_volume_layout(str(data)):
        return False
    if not open_layout(data).is_3d:
        raise GmsegError(f"--data {data} is a 2D nnU-Net dataset: prepare it (gmseg prepare) and pass that folder")
    return True


def is_gms(model: Any) -> bool:
    """Whether a loaded model is GMS (it has a latent mapping model): OpenVINO's mixed precision splits at it."""
    return hasattr(model, "mapping")


def is_binary_gms(model: Any) -> bool:
    """Whether the release's loop applies: GMS with one foreground class."""
    return is_gms(model) and model.labels.is_binary


def time_variants(name: str, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Every variant of one model, timed round-robin in worker processes; rows of the table."""
    source: Any = Path(args.model) if args.model else build_model(name, args.size, args.seed)
    exports = {VARIANTS[v][2] for v in args.variants if VARIANTS[v][2]}
    calibration = calibration_source(args, root)
    split = args.split if args.data else None
    folders, refused = export_folders(source, exports, root / name, calibration, args.calibration_size, split)
    # the release's loop predicts one binary mask with GMS: a U-Net or a multi-class GMS has none; OpenVINO's
    # mixed precision splits a GMS graph at its mapping: a U-Net has none
    gms = args.gms if args.model else name.startswith("gms")
    applies = {"release": args.binary_gms if args.model else gms, "openvino mixed": gms}
    timed = [v for v in args.variants if VARIANTS[v][2] not in refused and applies.get(v, True)]
    images, masks = common.synthetic_batch(args.images, args.size, seed=args.seed)
    workers: dict[str, common.Worker] = {}
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in timed}
    try:
        for variant in timed:
            fmt = VARIANTS[variant][2]
            folder = folders[fmt] if fmt else (str(args.model) if args.model else None)
            workers[variant] = common.Worker(
                "backends:BackendWorker",
                f"{name}/{variant}",
                variant=variant,
                device=args.device,
                model=name,
                size=args.size,
                seed=args.seed,
                folder=folder,
            )
        checksums = {w.wait_ready().call("info")["checksum"] for w in workers.values()} - {None}
        if len(checksums) > 1:
            raise RuntimeError(f"workers built different weights: {checksums}")
        for worker in workers.values():  # warm-up: weights paged in, kernels chosen, compile compiles
            worker.call("run", images=images[: args.batch], masks=masks[: args.batch], batch=args.batch)
        for round_index in range(args.rounds):
            for variant, worker in workers.items():
                results[variant].append(worker.call("run", images=images, masks=masks, batch=args.batch))
                rate = args.images / results[variant][-1]["seconds"]
                print(f"[{name}] round {round_index + 1}/{args.rounds} {variant:<20} {rate:.3f} img/s", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    best = {v: min(r, key=lambda result: result["seconds"]) for v, r in results.items()}
    reference = best.get(REFERENCE)
    cpu = {v: min(result["cpu_seconds"] for result in r) for v, r in results.items()}  # the least disturbed round
    rows = []
    release = best.get("release")
    for variant in args.variants:
        backend, _, export = VARIANTS[variant]
        if variant not in results and export not in refused:  # the release loop or mixed of a U-Net
            continue
        if export in refused:
            rows.append(
                {"model": name, "variant": variant, "backend": backend, "precision": variant_precision(variant),
                 "images": args.images, "size": args.size, "refused": refused[export]}
            )  # fmt: skip
            continue
        rate = args.images / best[variant]["seconds"]
        rows.append(
            {
                "model": name,
                "variant": variant,
                "backend": backend,
                "precision": variant_precision(variant),
                "images": args.images,
                "size": args.size,
                "images_per_s": rate,
                "seconds_all_rounds": [round(r["seconds"], 3) for r in results[variant]],
                "x_torch_fp32": None if reference is None else rate / (args.images / reference["seconds"]),
                "x_release": None if release is None else rate / (args.images / release["seconds"]),
                "cpu_seconds_per_image": cpu[variant] / args.images,
                # CPU time of the process (all its threads): far less disturbed than wall time on a shared CPU
                "x_torch_fp32_cpu_time": None
                if REFERENCE not in cpu or args.device.startswith("cuda")
                else cpu[REFERENCE] / cpu[variant],
                "max_dprob": None
                if reference is None
                else common.max_abs_diff(best[variant]["probabilities"], reference["probabilities"]),
                "peak_mb": best[variant]["peak_mb"],
                "memory_kind": best[variant]["memory_kind"],
            }
        )
    return rows


def score_images(args: argparse.Namespace, predict: Any, out: Path) -> dict[str, float]:
    """A prepared 2D dataset's ``--stage`` images predicted into ``out/predictions`` and scored as ``gmseg
    test`` scores them; Dice by image name."""
    from gmseg.data.io import find_file
    from gmseg.evaluate import run_evaluate
    from gmseg.testing import stage_names
    from study_stats import per_image_dice

    data = Path(args.data)
    names = stage_names(data, args.split, args.stage)
    inputs: Any = data / "images" if names is None else [find_file(data / "images", n) for n in names]
    split = args.split or (data / "split.json" if (data / "split.json").is_file() else None)
    predict(inputs, out / "predictions", None)
    run_evaluate(out / "predictions", data, out_dir=out, split=split, stage=args.stage if split else "test")
    return per_image_dice(out)


def score_cases(args: argparse.Namespace, predict: Any, out: Path) -> dict[str, float]:
    """A volume dataset's ``--stage`` cases (:func:`gmseg.volume_testing.test_cases`) predicted whole, named by
    case, and scored in 3D as ``gmseg test`` scores them (metrics.csv, a row per case); mean Dice by case."""
    from gmseg.data.layouts import open_layout
    from gmseg.data.readers import output_suffix
    from gmseg.errors import DataError
    from gmseg.evaluate import EvaluationResult, write_results
    from gmseg.metrics3d import summarize_volumes, volume_columns
    from gmseg.volume_evaluate import evaluate_volumes
    from gmseg.volume_testing import test_cases
    from study_stats import per_case_dice

    layout = open_layout(args.data)
    cases = test_cases(layout, args.split, args.stage)
    predict([c.images[0] for c in cases], out / "predictions", [c.name for c in cases])
    pairs = [(c.name, out / "predictions" / f"{c.name}{output_suffix(c.images[0])}", c.label) for c in cases]
    rows, entries, problems = evaluate_volumes(pairs, layout.labels, "standard")
    if problems:
        raise DataError(f"cannot evaluate {out / 'predictions'}: {len(problems)} problem(s)", problems)
    summary = summarize_volumes(rows, entries, "standard", layout.labels)
    labels, columns = layout.labels, volume_columns(layout.labels)
    write_results(EvaluationResult(rows=rows, summary=summary, labels=labels, columns=columns), out)
    return per_case_dice(out)


def score_variants(args: argparse.Namespace, rows: list[dict[str, Any]], root: Path) -> None:
    """With a trained model and a dataset: each variant predicts and scores the stage's images (or, on a
    volume dataset, cases) as ``gmseg test`` does; dDice is paired per image (case) against torch fp32
    (Dice points, mean ± SE)."""
    from gmseg.models import load_model
    from gmseg.predict import predict_files
    from study_stats import paired_difference

    score = score_cases if args.volumes else score_images
    unit = "cases" if args.volumes else "images"
    dice: dict[str, dict[str, float]] = {}
    for row in rows:
        if "refused" in row or row["variant"] == "release":
            continue
        variant = row["variant"]
        backend, options, fmt = VARIANTS[variant]
        folder = export_dir(root / "model", fmt) if fmt else Path(args.model)
        model = load_model(folder)

        def predict(inputs: Any, out: Path, names: list[str] | None) -> None:
            predict_files(
                model, inputs, out, backend=backend, device=args.device, progress=False, names=names, **options
            )

        dice[variant] = score(args, predict, root / "scores" / variant.replace(" ", "-"))
        print(f"[scored] {variant}: {len(dice[variant])} {unit}", flush=True)
    for row in rows:
        if REFERENCE in dice and row["variant"] in dice:
            mean, se, n, _ = paired_difference(dice[row["variant"]], dice[REFERENCE])
            row.update({"d_dice": mean, "d_dice_se": se, "d_dice_images": n, "d_dice_unit": unit})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gms-taesd", "unet"], choices=MODELS)
    parser.add_argument("--model", help="a trained model folder (or run folder) to time and score instead")
    parser.add_argument(
        "--data",
        help="with --model: a prepared dataset whose --stage images are scored, or an MSD task / nnU-Net raw "
        "dataset of volumes whose --stage cases are scored in 3D",
    )
    parser.add_argument("--split", help="split file (default: DATA/split.json; volumes: the dataset's own)")
    parser.add_argument("--stage", default="test")
    parser.add_argument("--size", type=int, default=224, help="image size of the seeded models")
    parser.add_argument("--images", type=int, default=16, help="images per variant and round")
    parser.add_argument("--batch", type=int, default=8, help="images per predictor call (a CPU runs them one by one)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds; the best counts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), help="default: all but compile")
    parser.add_argument("--compile", action="store_true", help="add 'torch compile' (slow warm-up on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibration-size",
        type=int,
        default=CALIBRATION_SIZE,
        help=f"int8 calibration images (a sample of --data's training split; default {CALIBRATION_SIZE}, as gmseg export)",
    )
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/backends.json)")
    args = parser.parse_args(argv)
    if args.data and not args.model:
        parser.error("--data scores a trained model: pass --model DIR too")
    args.volumes = bool(args.data) and is_volume_data(Path(args.data))
    if args.volumes:  # a missing split or stage stops here, not after the timing
        from gmseg.data.layouts import open_layout
        from gmseg.volume_testing import test_cases

        test_cases(open_layout(args.data), args.split, args.stage)
    cuda = args.device.startswith("cuda")
    args.variants = args.variants or (GPU_VARIANTS if cuda else DEFAULT_VARIANTS)
    if args.compile and "torch compile" not in args.variants:
        args.variants.append("torch compile")
    if REFERENCE in args.variants:  # the reference runs first in every round
        args.variants = [REFERENCE] + [v for v in args.variants if v != REFERENCE]
    started = time.perf_counter()
    payload = common.header(args.device)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gmseg-backends-") as temp:
        if args.model:
            from gmseg.models import load_model

            loaded = load_model(args.model)
            args.binary_gms = is_binary_gms(loaded)
            args.gms = is_gms(loaded)
            args.size = loaded.image_size
            rows = time_variants("model", args, Path(temp))
            if args.data:
                score_variants(args, rows, Path(temp))
        else:
            for name in args.models:
                rows += time_variants(name, args, Path(temp))
    payload.update(
        {
            "benchmark": "backends",
            "size": args.size,
            "model": args.model or "seeded weights",
            "data": args.data,
            "scored_per": None if not args.data else "case (3D, mean_dice)" if args.volumes else "image",
            "seconds_total": round(time.perf_counter() - started, 1),
            "notes": "images_per_s from the best of the round-robin rounds; max_dprob against torch fp32 on the same "
            "images and weights; d_dice paired per image (per case, on its mean_dice, for a volume dataset) against "
            "torch fp32 (Dice points), only with --model/--data.",
            "rows": rows,
        }
    )
    path = common.write_result("backends", payload, args.out)
    for row in rows:
        if "d_dice" in row:
            row["d_dice_text"] = f"{row['d_dice']:+.2f} ± {row['d_dice_se']:.2f}"
    machine = payload["machine"]
    print(
        f"\nBackends at {args.size}x{args.size} on {args.device} ({machine.get('gpu', machine['cpu'])}, "
        f"{machine['torch_threads']} threads, torch {torch.__version__})"
    )
    columns = [
        ("model", "model"),
        ("variant", "backend, precision"),
        ("images_per_s", "images/s"),
        ("x_release", "x release loop"),
        ("x_torch_fp32", "x torch fp32"),
        ("x_torch_fp32_cpu_time", "x torch fp32 (CPU time)"),
        ("max_dprob", "max abs dprob"),
        ("peak_mb", "peak MB"),
    ]
    if any("d_dice" in row for row in rows):
        unit = "case" if args.volumes else "image"
        columns.append(("d_dice_text", f"dDice ± SE (points, paired per {unit})"))
    if any("refused" in row for row in rows):
        columns.append(("refused", "export refused"))
    print(common.format_table(rows, columns))
    print(f"Written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``gmseg`` command: argument parsing only; every verb is one call into the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import GmsegError


def add_first_stage_args(parser: argparse.ArgumentParser, default: str | None, help_default: str) -> None:
    parser.add_argument(
        "--vae",
        default=default,
        help="first stage: a Hub id (owner/repo[/subfolder]), a diffusers folder, an LDM checkpoint "
        f"(with --vae-config), or a folder with taesd_encoder/taesd_decoder files. {help_default}",
    )
    parser.add_argument("--vae-config", default=None, help="LDM yaml for a checkpoint given as --vae")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .configs import packaged_configs

    parser = argparse.ArgumentParser(prog="gmseg", description="Generative Medical Segmentation (GMS).")
    parser.add_argument("--version", action="version", version=f"gmseg {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    demo = verbs.add_parser("demo", help="end to end on generated ultrasound-like data: train, predict, evaluate")
    add_first_stage_args(demo, None, "Default: TAESD from the Hub (madebyollin/taesd, 10 MB).")
    demo.add_argument("--out", default="gmseg-demo", help="output folder (default: gmseg-demo)")
    demo.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")

    prepare = verbs.add_parser("prepare", help="turn a public dataset download or your folders into the layout")
    prepare.add_argument(
        "dataset",
        help="a public dataset's download layout (e.g. busi; an unknown name lists every layout of "
        "gmseg.data.prepare.LAYOUTS), or 'folders' for your own image and mask folders",
    )
    prepare.add_argument("--raw", help="the dataset's download, unpacked")
    prepare.add_argument("--images", help="with 'folders': the image folder")
    prepare.add_argument("--masks", help="with 'folders': the mask folder")
    prepare.add_argument(
        "--mask-suffix", default="", help="with 'folders': mask stem = MASK_PREFIX + KEY + SUFFIX (e.g. _mask)"
    )
    prepare.add_argument("--mask-prefix", default="", help="with 'folders': mask stem = PREFIX + KEY + MASK_SUFFIX")
    prepare.add_argument(
        "--image-prefix",
        default="",
        help="with 'folders': image stem = PREFIX + KEY; images and masks pair by KEY (e.g. bus_0001-l.png with "
        "mask_0001-l.png: --image-prefix bus_ --mask-prefix mask_)",
    )
    prepare.add_argument(
        "--out", required=True, help="dataset folder to write (images/, masks/, split.json, dataset.json)"
    )
    prepare.add_argument("--split", help="the paper's split file (.pkl) or a JSON split to apply")
    prepare.add_argument("--test-fraction", type=float, default=0.2, help="without --split (default 0.2)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="foreground = value > THRESHOLD x full scale (default: any non-zero; JPEG: 0.5)",
    )
    prepare.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --out whole, once the new dataset is complete"
    )
    prepare.add_argument(
        "--labels",
        choices=["pathology"],
        default=None,
        help="busi, bus: 'pathology' writes 3-class masks (background 0, benign 1, malignant 2; palette PNGs) "
        "instead of binary lesion masks (default: binary)",
    )

    train = verbs.add_parser(
        "train", help="train a model (model.name: gms or unet) with a trainer variant (trainer.name) from a config"
    )
    train.add_argument(
        "--config",
        help=f"a YAML file or a packaged config's name: {', '.join(packaged_configs())}",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=20 (repeatable)",
    )
    train.add_argument(
        "--resume",
        help="continue a run folder from its checkpoints/last, with its config.yaml "
        "(not with --config; --set may change settings, but not model.*, data.image_size or the split)",
    )
    train.add_argument("--run-dir", help="run folder to create (default: train.output_dir/NAME-TIMESTAMP)")
    train.add_argument("--no-progress", action="store_true")

    predict = verbs.add_parser("predict", help="segment images (no ground truth needed)")
    predict.add_argument("--model", required=True, help="model folder (checkpoints/best of a run) or Hub id")
    predict.add_argument(
        "--input", required=True, nargs="+", help="image or volume files, DICOM series folders, or folders of them"
    )
    predict.add_argument(
        "--output",
        required=True,
        help="folder for NAME.png masks (volumes: label volumes in their input's format; DICOM series: NAME.nii.gz)",
    )
    predict.add_argument("--save-prob", action="store_true", help="also write NAME.prob.npy (float32, original size)")
    predict.add_argument("--overlay", action="store_true", help="also write NAME.overlay.png")
    predict.add_argument("--gt", help="mask folder: draw true contours on overlays too")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--device", default="auto")
    predict.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "mixed"],
        help="fp32 (default, exact) or bf16 autocast (faster on some hardware; "
        "probabilities move by up to ~0.3 at single pixels, see BENCHMARKS.md); mixed: OpenVINO on a GMS "
        "export, the autoencoder in bf16 and the latent mapping in fp32",
    )
    predict.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last memory layout (probabilities move by up to ~1e-4; faster on CPUs)",
    )
    predict.add_argument(
        "--compile", action="store_true", help="torch.compile the mapping model and decoder (slow first batch)"
    )
    predict.add_argument(
        "--backend",
        default="auto",
        help="what runs the model: auto (default: torch, or an exported folder's runtime), torch, onnxruntime, "
        "openvino (gmseg.inference.BACKENDS); onnxruntime and "
        "openvino run folders written by 'gmseg export' (pip install 'gmseg[deploy]')",
    )
    predict.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes reading and resizing images ahead of the model (default: up to 4; 0: read, predict and "
        "write in turn)",
    )
    add_tta_arg(predict)
    add_overwrite_arg(predict)
    predict.add_argument(
        "--continue",
        dest="skip_complete",
        action="store_true",
        help="continue an interrupted run into the same --output: keep the inputs whose outputs gmseg already "
        "wrote (complete: every file is written whole or not at all), predict the rest",
    )

    evaluate = verbs.add_parser("evaluate", help="score predicted masks against ground truth")
    add_evaluation_args(evaluate)
    evaluate.add_argument("--pred", required=True, help="folder of predicted NAME.png masks")
    evaluate.add_argument(
        "--gt", required=True, help="folder of true masks (or a dataset folder with masks/ or labelsTr/)"
    )
    evaluate.add_argument("--out", help="where to write metrics.csv and summary.json (default: --pred)")
    evaluate.add_argument(
        "--overwrite", action="store_true", help="replace an existing metrics.csv / summary.json in --out"
    )
    evaluate.add_argument(
        "--images", help="the images: also write report.html (default: --gt's images/ folder, when there is one)"
    )
    evaluate.add_argument(
        "--missing",
        default="error",
        choices=["error", "empty", "skip"],
        help="a ground-truth mask without a prediction: an error naming it (default), scored as an empty "
        "mask, or left out (skip: score the names that have both); summary.json counts them",
    )

    test = verbs.add_parser("test", help="predict + evaluate a dataset (also cross-domain)")
    add_evaluation_args(test)
    test.add_argument("--model", required=True)
    test.add_argument(
        "--data",
        required=True,
        help="a prepared dataset folder (images/, masks/), an MSD task folder or an nnU-Net raw dataset (2D or 3D)",
    )
    test.add_argument("--out", required=True)
    test.add_argument("--batch-size", type=int, default=8)
    test.add_argument("--device", default="auto")
    add_tta_arg(test)
    add_overwrite_arg(test)

    generalize = verbs.add_parser(
        "generalize", help="test one model on several datasets (in-domain and cross-domain): one table"
    )
    generalize.add_argument("--model", required=True, help="a model folder (GMS or the U-Net) or a run folder")
    generalize.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="NAME=FOLDER",
        help="a prepared dataset folder, optionally named (repeatable), e.g. --data bus=data/bus",
    )
    generalize.add_argument(
        "--in-domain", metavar="NAME", help="the dataset the model was trained on: only its test split is scored"
    )
    generalize.add_argument(
        "--stages",
        nargs="+",
        default=["test", "all"],
        help="split stages to test in each dataset; 'all' = every image (default: test all)",
    )
    generalize.add_argument("--out", required=True, help="folder for OUT/<dataset>/<stage>/ and the table")
    generalize.add_argument("--size", default="native", help="'native' (default) or a square size, e.g. 224")
    generalize.add_argument("--empty", default="standard", choices=["standard", "paper"])
    generalize.add_argument("--batch-size", type=int, default=8)
    generalize.add_argument("--device", default="auto")
    add_tta_arg(generalize)
    add_overwrite_arg(generalize)

    plot = verbs.add_parser("plot", help="draw training curves of a run")
    plot.add_argument("run_dir")
    plot.add_argument(
        "--out",
        help="picture to write, in the format its ending names: .png, .pdf, .svg, .jpg (default: RUN_DIR/curves.png)",
    )
    plot.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out that gmseg did not write (never the log)"
    )
    plot.add_argument("--html", action="store_true", help="also write RUN_DIR/curves.html: the curves and the log")

    compare = verbs.add_parser("compare", help="compare scored folders on the same images, case by case (paired)")
    compare.add_argument(
        "folders", nargs="+", metavar="FOLDER", help="two or more scored folders (LABEL=FOLDER to name one)"
    )
    compare.add_argument("--out", required=True, help="folder for comparison.csv/.json/.png/.html")
    compare.add_argument(
        "--intersection", action="store_true", help="compare the cases every folder scored (default: refuse)"
    )
    compare.add_argument("--top", type=int, default=24, help="cases shown side by side (default 24)")
    add_overwrite_arg(compare)

    export = verbs.add_parser("export", help="write a model folder as one ONNX or OpenVINO graph, for deployment")
    export.add_argument("--model", required=True, help="a model folder (GMS or the U-Net) or a run folder")
    export.add_argument("--format", required=True, choices=["onnx", "openvino"], help="the graph's format")
    export.add_argument("--out", required=True, help="the exported model folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "int8"],
        help="fp32 (default, the torch model's probabilities to 1e-4) or int8: post-training quantisation "
        "(onnx: ONNX Runtime, openvino: NNCF) calibrated on --calibration; faster, inexact: check test Dice",
    )
    export.add_argument(
        "--calibration",
        help="with --precision int8: a prepared dataset or an MSD / nnU-Net dataset of volumes (its training "
        "split is used: slices of its training cases) or a folder of training images",
    )
    export.add_argument(
        "--split",
        help="the split whose training stage calibrates, e.g. the run's split.json (default: the dataset's own)",
    )
    export.add_argument(
        "--calibration-size", type=int, default=300, help="calibration images or slices, a seeded sample (default 300)"
    )
    export.add_argument("--calibration-seed", type=int, default=0, help="seed of that sample (default 0)")

    official = verbs.add_parser("import-official", help="turn the paper's released weights into a model folder")
    official.add_argument("--lmm", required=True, help="the release's mapping checkpoint, e.g. best_model.pth")
    add_first_stage_args(official, None, "E.g. 768-v-ema-first-stage-VAE.ckpt with --vae-config.")
    official.add_argument("--image-size", type=int, default=224)
    official.add_argument("--out", required=True)
    official.add_argument("--include-first-stage", action="store_true", help="store the first stage in the folder")
    official.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing non-empty --out whole (never one holding an input)",
    )
    return parser


def add_tta_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta", action="store_true", help="average over the image and its 3 mirror images (4x the inference time)"
    )


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist, also ones gmseg did not write (never an input)",
    )


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="split file: evaluate only the names of --stage")
    parser.add_argument("--stage", default="test", help="which split list to use (default: test)")
    parser.add_argument("--size", default="native", help="'native' (default) or a square size, e.g. 224 (paper)")
    parser.add_argument(
        "--empty",
        default="standard",
        choices=["standard", "paper"],
        help="both-empty images score 1 (standard) or 0 (paper, as the release)",
    )
    parser.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="true masks: foreground = value > THRESHOLD x full scale (default: the mask rule, "
        "any non-zero; JPEG 0.5); 0.5 is the release's reader for graded masks",
    )


def print_warnings(warnings: Sequence[str], limit: int = 20) -> None:
    """Warnings go to stderr, the first ``limit`` of them, so a score is never read without them."""
    for line in warnings[:limit]:
        print(f"warning: {line}", file=sys.stderr)
    if len(warnings) > limit:
        print(f"warning: ... and {len(warnings) - limit} more", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    verb = args.verb
    if verb == "demo":
        from .demo import run_demo

        run_demo(out_dir=args.out, vae=args.vae, vae_config=args.vae_config, quick=args.quick)
    elif verb == "prepare":
        from .data.prepare import LAYOUTS, prepare_dataset, prepare_folders

        if args.dataset != "folders" and args.dataset.lower() not in LAYOUTS:  # the registry is the list
            raise GmsegError(
                f"unknown dataset layout {args.dataset!r}; choose one of {', '.join(sorted(LAYOUTS))}, or 'folders'"
            )
        if args.dataset == "folders":
            if not (args.images and args.masks):
                raise GmsegError("'gmseg prepare folders' needs --images DIR and --masks DIR.")
            if args.labels:
                raise GmsegError(
                    f"'gmseg prepare folders' writes binary masks; --labels {args.labels} is for busi and bus."
                )
            report = prepare_folders(
                args.images,
                args.masks,
                args.out,
                mask_suffix=args.mask_suffix,
                mask_prefix=args.mask_prefix,
                image_prefix=args.image_prefix,
                split=args.split,
                test_fraction=args.test_fraction,
                seed=args.seed,
                mask_threshold=args.mask_threshold,
                overwrite=args.overwrite,
            )
        else:
            if not args.raw:
                raise GmsegError(f"'gmseg prepare {args.dataset}' needs --raw DIR (the unpacked download).")
            report = prepare_dataset(
                args.dataset,
                args.raw,
                args.out,
                split=args.split,
                test_fraction=args.test_fraction,
                seed=args.seed,
                mask_threshold=args.mask_threshold,
                overwrite=args.overwrite,
                labels=args.labels,
            )
        print(report.summary())
    elif verb == "train":
        from .training import train

        if not args.config and not args.resume:
            raise GmsegError("'gmseg train' needs --config FILE (or --resume RUN_DIR).")
        if args.resume and args.config:
            raise GmsegError(
                "--config and --resume exclude each other: a resumed run keeps its own "
                "RUN_DIR/config.yaml; change settings with --set KEY=VALUE."
            )
        if args.resume and args.run_dir:
            raise GmsegError("--run-dir names a new run folder; with --resume the run folder is RESUME itself.")
        run_dir = train(
            args.config,
            overrides=args.overrides,
            resume=args.resume,
            run_dir=args.run_dir,
            progress=not args.no_progress,
        )
        print(f"Run folder: {run_dir}\nBest model: {run_dir / 'checkpoints' / 'best'}")
    elif verb == "predict":
        from .models import load_model
        from .predict import predict_files

        report = predict_files(
            load_model(args.model),
            args.input,
            args.output,
            save_prob=args.save_prob,
            overlay=args.overlay,
            gt_dir=args.gt,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            channels_last=args.channels_last,
            compile=args.compile,
            tta=args.tta,
            overwrite=args.overwrite,
            backend=args.backend,
            skip_complete=args.skip_complete,
            workers=args.workers,
        )
        summary = report.summary()
        if summary:  # the other ranks of an accelerate launch leave the summary to rank 0
            print(summary)
        return 0 if report.ok else 1
    elif verb == "evaluate":
        from .evaluate import format_summary, run_evaluate

        result = run_evaluate(
            args.pred,
            args.gt,
            out_dir=args.out,
            split=args.split,
            stage=args.stage,
            size=args.size,
            empty=args.empty,
            threshold=args.mask_threshold,
            images=args.images,
            overwrite=args.overwrite,
            missing=args.missing,
        )
        print(format_summary(result.summary))
        print_warnings(result.warnings)
    elif verb == "test":
        from .evaluate import format_summary
        from .testing import run_test

        result = run_test(
            args.model,
            args.data,
            args.out,
            split=args.split,
            stage=args.stage,
            size=args.size,
            empty=args.empty,
            batch_size=args.batch_size,
            device=args.device,
            tta=args.tta,
            mask_threshold=args.mask_threshold,
            overwrite=args.overwrite,
        )
        print(format_summary(result.summary))
        print_warnings(result.warnings)
        print(f"Per-image metrics, summary, report.png and report.html in {args.out}")
    elif verb == "generalize":
        from .evaluate import parse_size
        from .generalize import parse_dataset_arg, run_generalize

        datasets = [parse_dataset_arg(text) for text in args.data]
        result = run_generalize(
            args.model,
            datasets,
            args.out,
            stages=args.stages,
            size=parse_size(args.size),
            empty=args.empty,
            batch_size=args.batch_size,
            device=args.device,
            tta=args.tta,
            in_domain=args.in_domain,
            overwrite=args.overwrite,
        )
        print(result.to_markdown(args.model), end="")
        print(f"Table in {Path(args.out) / 'generalization.md'}; per-dataset reports under {args.out}/")
    elif verb == "plot":
        from .visualize import plot_training_curves

        print(plot_training_curves(args.run_dir, args.out, overwrite=args.overwrite))
        if args.html:
            from .report_html import write_training_page

            print(write_training_page(args.run_dir, overwrite=args.overwrite))
    elif verb == "compare":
        from .compare import format_comparison, run_compare

        comparison = run_compare(
            args.folders, args.out, intersection=args.intersection, top=args.top, overwrite=args.overwrite
        )
        print(format_comparison(comparison))
        print(f"comparison.csv, .json, .png and .html in {args.out}")
    elif verb == "export":
        from .export import export_model

        report = export_model(
            args.model,
            args.out,
            args.format,
            overwrite=args.overwrite,
            precision=args.precision,
            calibration=args.calibration,
            calibration_size=args.calibration_size,
            calibration_seed=args.calibration_seed,
            calibration_split=args.split,
        )
        print(report.summary())
    elif verb == "import-official":
        from .official import import_official

        if not args.vae:
            raise GmsegError("import-official needs --vae (e.g. 768-v-ema-first-stage-VAE.ckpt with --vae-config).")
        import_official(
            args.lmm,
            args.vae,
            args.vae_config,
            image_size=args.image_size,
            out_dir=args.out,
            include_first_stage=args.include_first_stage,
            overwrite=args.overwrite,
        )
        print(f"Model folder written to {Path(args.out)}")
    return 0


def run_guarded(label: str, call: Callable[[], object]) -> int:
    """Run a command: gmseg's own errors print as one message (no traceback) and exit 2.

    An integer result is the exit status; anything else (e.g. a run folder) means success.
    """
    try:
        result = call()
        return result if isinstance(result, int) else 0
    except GmsegError as error:
        print(f"{label}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # read-only folder, disk full, a file where a folder should be
        where = error.filename if error.filename is not None else ""
        cause = error.strerror or str(error)
        print(f"{label}: error: {where}{': ' if where else ''}{cause}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_guarded(f"gmseg {args.verb}", lambda: run(args))
    finally:
        if "torch" in sys.modules:  # a verb that never imported torch joined no process group
            from .distributed import end_launch

            end_launch()


if __name__ == "__main__":
    sys.exit(main())

"""Predict new images with trained models.

MODEL_DIR is a trained configuration folder WORKDIR/NAME/models/CONFIG__ARCH/ (all its fold_F
folders form an ensemble unless -f picks some), a single fold_F folder, or a model package
(PACKAGE.zip from `unetkit export`: checked and unpacked into a temporary folder, then used as is). Several -m folders form
a configuration ensemble (probabilities averaged on the input's grid). Input is a folder named
like imagesTs (CASE_0000.ext, CASE_0001.ext ... one file per channel), image files, or .txt
files listing image paths. Predictions are written as OUT/CASE.ext in the input's format and
geometry (NIfTI keeps the input's affine; pictures become PNG, TIFF stays TIFF).

examples:
  unetkit predict -i raw/Hippocampus/imagesTs -o pred -m unetkit_work/Hippocampus/models/3d_fullres__plain_unet
  unetkit predict -i scan_0000.nii.gz -o pred -m .../3d_fullres__plain_unet -f 0 --checkpoint best
  unetkit predict -i imagesTs -o pred -m .../2d__plain_unet .../3d_fullres__plain_unet --save-probabilities
  unetkit predict -i imagesTs -o pred -m MODEL_DIR --continue        # skip cases already written
  unetkit predict -i imagesTs -o pred -m hippocampus_3d.zip           # a model package
  unetkit predict --ensemble pred_2d pred_3d -o pred_ens              # average saved probabilities
  unetkit predict -i imagesTs -o pred -m hippocampus_onnx --engine onnx  # an `unetkit export --onnx` folder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit predict`` (no torch import here)."""
    parser.add_argument("-i", "--input", nargs="+", help="input folder, image files, or .txt lists of image paths")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    parser.add_argument("-m", "--model", nargs="+",
                        help="trained configuration folder(s), fold folder(s) or model package(s) (.zip)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to ensemble (default: every fold_F folder present)")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default=None,
                        help="which checkpoint of each fold (default final, or the one a package holds; "
                             "latest falls back to final)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write CASE.npz (float16 probabilities on the input's grid) and CASE.json")
    parser.add_argument("--continue", dest="skip_existing", action="store_true",
                        help="skip cases whose outputs already exist")
    parser.add_argument("--output-ending", default=None,
                        help="write label maps with this ending (e.g. .nii.gz, .png) instead of the input's format")
    parser.add_argument("--ensemble", nargs="+", metavar="PRED_DIR", default=None,
                        help="instead of predicting: average the saved probabilities of these prediction folders")
    p = parser.add_argument_group("postprocessing (default: the postprocessing.json `unetkit select` saved)")
    p.add_argument("--postprocessing", default=None, metavar="FILE",
                   help="apply this postprocessing.json instead of the one found beside the model")
    p.add_argument("--no-postprocessing", action="store_true", help="write the raw argmax label maps")
    s = parser.add_argument_group("sliding window")
    s.add_argument("--step-size", type=float, default=0.5, help="window stride as a fraction of the patch (0.5)")
    s.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="no test-time mirroring (2^axes times fewer forward passes, slightly worse)")
    s.add_argument("--tile-batch", type=int, default=None,
                   help="network inputs (tiles x mirrored copies) per forward pass "
                        "(default: 2 on CPU; on CUDA up to 8, fewer for large patches)")
    s.add_argument("--no-gaussian", dest="gaussian", action="store_false",
                   help="average overlapping tiles equally instead of Gaussian weighting")
    h = parser.add_argument_group("hardware")
    h.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run (auto: CUDA when available)")
    h.add_argument("--compile", action="store_true", help="torch.compile the networks (pays off on many cases)")
    h.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="float32 on CUDA (default fp16)")
    h.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                        help="onnx: -m is a folder from `unetkit export MODEL_DIR --onnx OUT_DIR`, run by "
                             "onnxruntime without torch (see docs/inference.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args: argparse.Namespace) -> int:
    """Load the models, check the inputs against them, predict, and print a one-line summary."""
    if args.ensemble:
        from unetkit.inference.ensemble import ensemble_folders

        written = ensemble_folders(args.ensemble, args.output, save_probabilities=args.save_probabilities,
                                   skip_existing=args.skip_existing)
        if not args.quiet:
            print(f"ensembled {len(written)} case(s) from {len(args.ensemble)} folders -> {args.output}")
        return 0
    if not args.input or not args.model:
        print("error: -i/--input and -m/--model are required (or --ensemble FOLDERS)", file=sys.stderr)
        return 2
    if not 0 < args.step_size <= 1:
        print(f"error: --step-size must be in (0, 1], got {args.step_size}", file=sys.stderr)
        return 2

    if args.engine == "onnx":
        return _predict_onnx(args)
    import contextlib

    from unetkit.inference.package import is_package, temporary_install

    with contextlib.ExitStack() as stack:
        model_dirs, checkpoint = [], args.checkpoint
        for model in args.model:
            if is_package(model):
                installed = stack.enter_context(temporary_install(model))
                model_dirs.append(installed.model_dir)
                checkpoint = checkpoint or installed.manifest["checkpoint"][len("checkpoint_"):]
            else:
                model_dirs.append(Path(model))
        return _predict(args, model_dirs, checkpoint or "final")


def _predict(args: argparse.Namespace, model_dirs: list[Path], checkpoint: str) -> int:
    """Predict with the model folders (packages already unpacked)."""
    import torch

    from unetkit.inference.predictor import Predictor, collect_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = collect_inputs(args.input)
    options = {}
    if args.no_postprocessing:
        options["postprocessing"] = None
    elif args.postprocessing:
        from unetkit.evaluation.postprocessing import load_postprocessing

        if not Path(args.postprocessing).is_file():
            print(f"error: {args.postprocessing}: no such postprocessing file", file=sys.stderr)
            return 2
        options["postprocessing"] = load_postprocessing(args.postprocessing)
    predictor = Predictor.from_model_dir(model_dirs, args.folds, checkpoint, args.device,
                                         step_size=args.step_size, mirror=args.mirror, tile_batch=args.tile_batch,
                                         use_gaussian=args.gaussian, amp=args.amp, compile=args.compile,
                                         progress=not args.quiet, **options)
    if predictor.postprocessing is not None and not args.quiet:
        steps = predictor.postprocessing.get("steps") or []
        described = ", ".join(f"keep largest component of {s['labels']}" for s in steps)
        print(f"postprocessing: {len(steps)} step(s) {described}" if steps
              else "postprocessing: none decided (the file says no step helped)")
    from unetkit.inference.cascade import run_previous_stages

    run_previous_stages(predictor, cases, args.output, checkpoint=checkpoint,
                        skip_existing=args.skip_existing, log=(lambda m: None) if args.quiet else print,
                        step_size=args.step_size, mirror=args.mirror, tile_batch=args.tile_batch,
                        use_gaussian=args.gaussian, amp=args.amp, compile=args.compile, progress=not args.quiet)
    summary = predictor.predict_files(cases, args.output, save_probabilities=args.save_probabilities,
                                      skip_existing=args.skip_existing, output_ending=args.output_ending)
    if not args.quiet:
        done = len(summary.case_seconds)
        per_case = summary.seconds / done if done else 0.0
        print(f"predicted {done} case(s), skipped {len(summary.skipped)} already written, "
              f"{summary.seconds:.1f} s ({per_case:.2f} s per case) on {predictor.device} -> {args.output}")
    return 0


def _predict_onnx(args: argparse.Namespace) -> int:
    """Predict with an ONNX export folder (unetkit.deploy.onnx_predict; the network runs in onnxruntime)."""
    unsupported = [flag for flag, used in (("--save-probabilities", args.save_probabilities),
                                           ("--continue", args.skip_existing), ("-f/--folds", args.folds),
                                           ("--checkpoint", args.checkpoint), ("--postprocessing", args.postprocessing),
                                           ("several -m folders", len(args.model) > 1)) if used]
    if unsupported:
        print(f"error: --engine onnx does not support {', '.join(unsupported)}", file=sys.stderr)
        return 2
    import time

    from unetkit.deploy.onnx_predict import OnnxPredictor
    from unetkit.inference.predictor import collect_inputs

    cases = collect_inputs(args.input)
    predictor = OnnxPredictor(args.model[0], mirror=args.mirror, step_size=args.step_size,
                              use_gaussian=args.gaussian, postprocessing=not args.no_postprocessing,
                              threads=args.threads,
                              providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
                              if args.device == "cuda" else None)
    start = time.perf_counter()
    seconds = predictor.predict_files({c.name: c.files for c in cases}, args.output,
                                      output_ending=args.output_ending)
    if not args.quiet:
        total = time.perf_counter() - start
        print(f"predicted {len(seconds)} case(s) with onnxruntime, {total:.1f} s "
              f"({total / max(1, len(seconds)):.2f} s per case) -> {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from unetkit.cli import main

    sys.exit(main(["predict", *sys.argv[1:]]))

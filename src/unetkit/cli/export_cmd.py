"""Write a trained model as one shareable archive (a model package).

MODEL_DIR is a trained configuration folder WORKDIR/NAME/models/CONFIG__ARCH/. The package holds
plans.json, fingerprint.json, dataset.json, postprocessing.json (when `unetkit select` decided
one), each fold's final (or best) weights as safetensors with their checkpoint JSON (no optimizer
or training state, nothing pickled), and a manifest with the unetkit version and every file's
SHA-256. `unetkit install` and `unetkit predict -m PACKAGE.zip` read it.

With --onnx OUT_DIR instead of a package: one ONNX network per fold (dynamic batch axis, no deep
supervision) plus unetkit_onnx.json with the whole prediction pipeline (normalization, spacing,
transposition, patch, tile step, Gaussian, mirror axes, labels, postprocessing); predict with
`unetkit predict --engine onnx -m OUT_DIR` or the torch-free module unetkit.deploy.onnx_predict.

examples:
  unetkit export unetkit_work/Hippocampus/models/3d_fullres__plain_unet hippocampus_3d.zip
  unetkit export .../2d__plain_unet model.zip --checkpoint best -f 0 1
  unetkit export unetkit_work/Hippocampus/models/3d_fullres__plain_unet --onnx hippocampus_onnx
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit export`` (no torch import here)."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained configuration folder WORKDIR/NAME/models/CONFIG__ARCH")
    parser.add_argument("package", metavar="PACKAGE.zip", nargs="?", default=None,
                        help="the archive to write (replaced atomically); omit with --onnx")
    parser.add_argument("--onnx", metavar="OUT_DIR", default=None,
                        help="write ONNX networks and the pipeline JSON into this folder instead of a package")
    parser.add_argument("--overwrite", action="store_true", help="with --onnx: replace an existing OUT_DIR")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="which checkpoint of each fold to ship (default final)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ship (default: every fold_F folder)")
    parser.add_argument("--dataset-json", default=None, metavar="FILE",
                        help="dataset.json to ship (default: the one of the raw dataset named in plans.json)")


def run(args: argparse.Namespace) -> int:
    """Export and print what the package holds."""
    from pathlib import Path

    from unetkit.inference.package import export_package

    if args.onnx:
        if args.package:
            print("error: give either PACKAGE.zip or --onnx OUT_DIR, not both", file=sys.stderr)
            return 2
        return _export_onnx(args)
    if not args.package:
        print("error: give PACKAGE.zip or --onnx OUT_DIR", file=sys.stderr)
        return 2
    if not args.package.lower().endswith(".zip"):
        print(f"error: {args.package}: the package name must end in .zip", file=sys.stderr)
        return 2
    manifest = export_package(args.model_dir, args.package, checkpoint=args.checkpoint, folds=args.folds,
                              dataset_json=args.dataset_json)
    size = Path(args.package).stat().st_size
    print(f"exported {manifest['dataset']}/{manifest['model']} ({manifest['checkpoint']}, folds "
          f"{', '.join(manifest['folds'])}; {len(manifest['files'])} files) -> {args.package} ({size / 1e6:.2f} MB)")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unetkit.deploy.onnx_export import export_onnx

    if Path(args.onnx).exists() and not args.overwrite:
        print(f"error: {args.onnx} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    description = export_onnx(args.model_dir, args.onnx, checkpoint=args.checkpoint, folds=args.folds,
                              overwrite=args.overwrite)
    print(f"exported {description['dataset']}/{description['model']} ({description['checkpoint']}, "
          f"{len(description['networks'])} ONNX network(s), opset {description['opset']}) -> {args.onnx}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from unetkit.cli import main

    sys.exit(main(["export", *sys.argv[1:]]))

"""Write a trained model as one shareable archive (a model package).

MODEL_DIR is a trained configuration folder WORKDIR/NAME/models/CONFIG__ARCH/. The package holds
plans.json, fingerprint.json, dataset.json, postprocessing.json (when `unetkit select` decided
one), each fold's final (or best) weights as safetensors with their checkpoint JSON (no optimizer
or training state, nothing pickled), and a manifest with the unetkit version and every file's
SHA-256. `unetkit install` and `unetkit predict -m PACKAGE.zip` read it.

examples:
  unetkit export unetkit_work/Hippocampus/models/3d_fullres__plain_unet hippocampus_3d.zip
  unetkit export .../2d__plain_unet model.zip --checkpoint best -f 0 1
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit export`` (no torch import here)."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained configuration folder WORKDIR/NAME/models/CONFIG__ARCH")
    parser.add_argument("package", metavar="PACKAGE.zip", help="the archive to write (replaced atomically)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="which checkpoint of each fold to ship (default final)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ship (default: every fold_F folder)")
    parser.add_argument("--dataset-json", default=None, metavar="FILE",
                        help="dataset.json to ship (default: the one of the raw dataset named in plans.json)")


def run(args: argparse.Namespace) -> int:
    """Export and print what the package holds."""
    from pathlib import Path

    from unetkit.inference.package import export_package

    if not args.package.lower().endswith(".zip"):
        print(f"error: {args.package}: the package name must end in .zip", file=sys.stderr)
        return 2
    manifest = export_package(args.model_dir, args.package, checkpoint=args.checkpoint, folds=args.folds,
                              dataset_json=args.dataset_json)
    size = Path(args.package).stat().st_size
    print(f"exported {manifest['dataset']}/{manifest['model']} ({manifest['checkpoint']}, folds "
          f"{', '.join(manifest['folds'])}; {len(manifest['files'])} files) -> {args.package} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from unetkit.cli import main

    sys.exit(main(["export", *sys.argv[1:]]))

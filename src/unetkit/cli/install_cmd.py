"""Install a model package (from `unetkit export`) into a work folder.

The archive is checked completely before anything is written: its manifest, every member's
SHA-256 and size, the member paths (nothing outside the install folder, no symlinks), and the
file kinds (JSON and safetensors only; pickles are refused). It is installed as
WORKDIR/NAME/ (NAME: the dataset the model was trained on), with the model at
WORKDIR/NAME/models/CONFIG__ARCH, ready for `unetkit predict -m`.

examples:
  unetkit install hippocampus_3d.zip                     # into ./unetkit_work/Hippocampus
  unetkit install hippocampus_3d.zip --workdir shared_models
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit install`` (no torch import here)."""
    parser.add_argument("package", metavar="PACKAGE.zip", help="a model package written by `unetkit export`")
    parser.add_argument("--workdir", default=None, help="work folder to install into (default ./unetkit_work)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing WORKDIR/NAME that holds something else")


def run(args: argparse.Namespace) -> int:
    """Verify, install, and print where the model is."""
    from unetkit.inference.package import install_package
    from unetkit.utils.paths import DEFAULT_WORKDIR

    installed = install_package(args.package, args.workdir or DEFAULT_WORKDIR, overwrite=args.overwrite)
    manifest = installed.manifest
    print(f"installed {manifest['model']} ({manifest['checkpoint']}, folds {', '.join(manifest['folds'])}; "
          f"written by unetkit {manifest.get('unetkit_version')}) -> {installed.model_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from unetkit.cli import main

    sys.exit(main(["install", *sys.argv[1:]]))

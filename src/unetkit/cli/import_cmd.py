"""Convert a folder of images and masks into a raw dataset (nnU-Net v2 layout).

Images and masks are paired by file name after stripping suffixes/prefixes such as `_mask`,
`_segmentation` or `_manual1` (detected when not given); numbered extra masks (`NAME_mask_1`)
belong to the same image. Masks may be PNG, GIF, TIFF, lossy JPEG (thresholded) or NIfTI; every
decision and every skipped file is printed and recorded in dataset.json under `unetkit_import`.
The first line printed is the summary; when data was skipped the exit status is 3 (the dataset is
written but marked partial: `unetkit check` and `unetkit run` refuse it) unless --allow-skips.
The dataset is built in a temporary folder and renamed into place only when complete.

Examples:
  unetkit import ../shared/datasets/DRIVE DRIVE_raw --images training/images \\
      --masks training/1st_manual --test-images test/images --test-masks test/1st_manual \\
      --labels background=0,vessel=1
  unetkit import ../shared/datasets/ISBI2012_EM ISBI_raw --images train/image \\
      --masks train/label --invert-mask --test-images test/image --labels background=0,membrane=1
  unetkit import Dataset_BUSI_with_GT BUSI_raw --images '*/images' --masks '*/mask'
  unetkit import CVC-ClinicDB CVC_raw --images Original --masks "Ground Truth"
  unetkit import ubench/busi UB_raw --images images --masks masks     # masks/0/NAME.png
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `unetkit import` (they mirror `import_dataset`'s arguments)."""
    parser.add_argument("source", help="folder holding the images and masks in their published layout")
    parser.add_argument("dest", help="raw dataset folder to create (refused if it exists, unless --overwrite)")
    g = parser.add_argument_group("where the files are (relative to SOURCE)")
    g.add_argument("--images", help="image folder, or a pattern over class sub-folders such as '*/images' "
                                    "(default: the first of images/, image/, imgs/, img/, else */images ...)")
    g.add_argument("--masks", action="append",
                   help="mask folder, with the same wildcards as --images ('*/mask'); repeat for several masks "
                        "per image (default: masks/, mask/, labels/, ... beside the images)")
    g.add_argument("--test-images", help="folder of test images, written to imagesTs/")
    g.add_argument("--test-masks", help="folder of the test images' masks (converted like --masks), written to labelsTs/")
    g = parser.add_argument_group("pairing by name (detected when not given)")
    g.add_argument("--image-suffix", help="stripped from image names before pairing, e.g. _training")
    g.add_argument("--image-prefix", help="stripped from the start of image names before pairing")
    g.add_argument("--mask-suffix", action="append",
                   help="stripped from mask names, e.g. _manual1; repeat (one mask folder) for several masks per image")
    g.add_argument("--mask-prefix", help="stripped from the start of mask names, e.g. mask_")
    g.add_argument("--mask-glob", help="instead of prefix/suffix: the masks of image NAME are the files matching "
                                       "this pattern with {name} replaced, e.g. '{name}_mask*.png'")
    g.add_argument("--test-image-suffix", help="stripped from test image names, e.g. _test")
    g.add_argument("--test-mask-suffix", help="stripped from test mask names (default: the --mask-suffix rule)")
    g = parser.add_argument_group("mask values")
    g.add_argument("--labels", help="label names and values, e.g. background=0,vessel=1 (default: from the masks)")
    g.add_argument("--threshold", type=float,
                   help="binarise masks: label 1 where value > T (default 127 for JPEG or strictly 0/255 masks)")
    g.add_argument("--invert-mask", action="store_true",
                   help="label 1 where value <= threshold (ISBI 2012: 0 = membrane becomes label 1)")
    g.add_argument("--label-map", help="map mask values to labels, e.g. 255:1 or 128:1,255:2")
    g.add_argument("--combine", choices=("union", "labels"), default=None,
                   help="several masks per image: union (maximum; the default) or labels (mask k -> label k; "
                        "the default for a mask folder split into per-label sub-folders)")
    g = parser.add_argument_group("output")
    g.add_argument("--color", choices=("auto", "keep"), default="auto",
                   help="auto: RGB pictures with R = G = B everywhere are stored as one grey channel when all "
                        "pictures are grey; keep: store them as they are")
    g.add_argument("--channel-name", help="name of a single image channel, e.g. MRI or CT (CT selects CT normalization)")
    g.add_argument("--name", help="dataset name in dataset.json (default: DEST's folder name)")
    g.add_argument("--limit", type=int, help="convert only the first N pairs (and N test images) by sorted name")
    g.add_argument("--allow-skips", action="store_true",
                   help="accept an import that skipped data (exit status 0, the dataset is not marked partial)")
    g.add_argument("--num-processes", type=int, help="worker processes (default: up to 4)")
    g.add_argument("--overwrite", action="store_true", help="replace DEST (only once the new dataset is complete)")


def run(args: argparse.Namespace) -> int:
    """Run the import and print the report (summary line first); exit status 3 when data was skipped
    and --allow-skips was not given."""
    from unetkit.data.importers import import_dataset

    try:
        report = import_dataset(
            args.source, args.dest, images=args.images, masks=args.masks, image_suffix=args.image_suffix,
            image_prefix=args.image_prefix, mask_suffix=args.mask_suffix, mask_prefix=args.mask_prefix,
            mask_glob=args.mask_glob, test_images=args.test_images, test_image_suffix=args.test_image_suffix,
            test_masks=args.test_masks, test_mask_suffix=args.test_mask_suffix, labels=args.labels,
            label_map=args.label_map, threshold=args.threshold, invert_mask=args.invert_mask,
            combine=args.combine, color=args.color, channel_name=args.channel_name, name=args.name,
            limit=args.limit, allow_skips=args.allow_skips, num_processes=args.num_processes,
            overwrite=args.overwrite, progress=sys.stderr.isatty())
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    if report.exit_status:
        print(f"error: {report.summary()}; the dataset is marked partial (rerun with --allow-skips to accept)",
              file=sys.stderr)
    return report.exit_status

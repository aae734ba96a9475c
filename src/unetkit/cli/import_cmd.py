"""Convert a folder of images and masks into a raw dataset (nnU-Net v2 layout).

Images and masks are paired by file name after stripping suffixes/prefixes such as `_mask`,
`_segmentation` or `_manual1` (detected when not given). Masks may be PNG, GIF, TIFF, lossy
JPEG (thresholded) or NIfTI; every decision and every skipped file is printed and recorded in
dataset.json under `unetkit_import`. The dataset is built in a temporary folder and renamed into
place only when complete.

Examples:
  unetkit import ../shared/datasets/DRIVE DRIVE_raw --images training/images \\
      --masks training/1st_manual --test-images test/images --test-masks test/1st_manual \\
      --labels background=0,vessel=1
  unetkit import ../shared/datasets/ISBI2012_EM ISBI_raw --images train/image \\
      --masks train/label --invert-mask --test-images test/image --labels background=0,membrane=1
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `unetkit import` (they mirror `import_dataset`'s arguments)."""
    parser.add_argument("source", help="folder holding the images and masks in their published layout")
    parser.add_argument("dest", help="raw dataset folder to create (refused if it exists, unless --overwrite)")
    g = parser.add_argument_group("where the files are (relative to SOURCE)")
    g.add_argument("--images", help="image folder (default: the first of images/, image/, imgs/, img/)")
    g.add_argument("--masks", action="append",
                   help="mask folder; repeat for several masks per image (default: masks/, labels/, ...)")
    g.add_argument("--test-images", help="folder of test images, written to imagesTs/")
    g.add_argument("--test-masks", help="folder of the test images' masks (converted like --masks), written to labelsTs/")
    g = parser.add_argument_group("pairing by name (detected when not given)")
    g.add_argument("--image-suffix", help="stripped from image names before pairing, e.g. _training")
    g.add_argument("--image-prefix", help="stripped from the start of image names before pairing")
    g.add_argument("--mask-suffix", action="append",
                   help="stripped from mask names, e.g. _manual1; repeat (one mask folder) for several masks per image")
    g.add_argument("--mask-prefix", help="stripped from the start of mask names, e.g. mask_")
    g.add_argument("--test-image-suffix", help="stripped from test image names, e.g. _test")
    g.add_argument("--test-mask-suffix", help="stripped from test mask names (default: the --mask-suffix rule)")
    g = parser.add_argument_group("mask values")
    g.add_argument("--labels", help="label names and values, e.g. background=0,vessel=1 (default: from the masks)")
    g.add_argument("--threshold", type=float,
                   help="binarise masks: label 1 where value > T (default 127 for JPEG or strictly 0/255 masks)")
    g.add_argument("--invert-mask", action="store_true",
                   help="label 1 where value <= threshold (ISBI 2012: 0 = membrane becomes label 1)")
    g.add_argument("--label-map", help="map mask values to labels, e.g. 255:1 or 128:1,255:2")
    g.add_argument("--combine", choices=("union", "labels"), default="union",
                   help="several masks per image: union (maximum) or labels (mask k -> label k)")
    g = parser.add_argument_group("output")
    g.add_argument("--channel-name", help="name of a single image channel, e.g. MRI or CT (CT selects CT normalization)")
    g.add_argument("--name", help="dataset name in dataset.json (default: DEST's folder name)")
    g.add_argument("--limit", type=int, help="convert only the first N pairs (and N test images) by sorted name")
    g.add_argument("--num-processes", type=int, help="worker processes (default: up to 4)")
    g.add_argument("--overwrite", action="store_true", help="replace DEST (only once the new dataset is complete)")


def run(args: argparse.Namespace) -> int:
    """Run the import and print the report: counts, the mask rule, and every skipped file with its reason."""
    from unetkit.data.importers import import_dataset

    try:
        report = import_dataset(
            args.source, args.dest, images=args.images, masks=args.masks, image_suffix=args.image_suffix,
            image_prefix=args.image_prefix, mask_suffix=args.mask_suffix, mask_prefix=args.mask_prefix,
            test_images=args.test_images, test_image_suffix=args.test_image_suffix,
            test_masks=args.test_masks, test_mask_suffix=args.test_mask_suffix, labels=args.labels,
            label_map=args.label_map, threshold=args.threshold, invert_mask=args.invert_mask,
            combine=args.combine, channel_name=args.channel_name, name=args.name, limit=args.limit,
            num_processes=args.num_processes, overwrite=args.overwrite, progress=sys.stderr.isatty())
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0

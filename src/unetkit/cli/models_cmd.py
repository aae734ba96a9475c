"""List the registered models with their parameters and FLOPs.

Parameters and FLOPs are those of each model's default configuration ("by name alone"), built on
PyTorch's meta device (no memory, no weights), for 1 input channel and 2 classes, at a default
patch of 96x96x96 (3D) / 224x224 (2D) unless --patch is given. FLOPs count matrix
multiplications, convolutions and attention (torch.utils.flop_counter, 2 FLOPs per
multiply-accumulate; GMACs = GFLOPs / 2). See docs/models.md, "Profiling".

examples:
  unetkit models
  unetkit models --dims 3 --family transformer
  unetkit models --dims 2 --patch 512 512 --json
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit models``."""
    parser.add_argument("--dims", type=int, choices=[2, 3], help="only models supporting 2D or 3D (default: both)")
    parser.add_argument("--family", help="only this family")
    parser.add_argument("--patch", type=int, nargs="+", help="patch for the FLOPs (2 or 3 numbers; sets --dims)")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels (1)")
    parser.add_argument("--classes", type=int, default=2, help="output classes (2)")
    parser.add_argument("--no-size", action="store_true", help="skip parameters and FLOPs (instant)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print one row per (model, dimension)."""
    from unetkit.models import list_families, list_models, model_info
    from unetkit.models.profile import DEFAULT_PATCH, format_table, model_size

    dims_filter = args.dims
    if args.patch:
        if len(args.patch) not in (2, 3):
            print(f"error: --patch needs 2 or 3 numbers, got {args.patch}", file=sys.stderr)
            return 2
        dims_filter = len(args.patch)
    if args.family and args.family not in list_families():
        print(f"error: unknown family {args.family!r}; known: {', '.join(list_families())}", file=sys.stderr)
        return 2
    rows = []
    for name in list_models(spatial_dims=dims_filter, family=args.family):
        info = model_info(name)
        for d in info.spatial_dims:
            if dims_filter is not None and d != dims_filter:
                continue
            row = {"name": name, "family": info.family, "dims": d, "deep_supervision": info.deep_supervision,
                   "divisible_by": info.extra.get("divisible_by", "")}
            if not args.no_size:
                patch = tuple(args.patch) if args.patch else DEFAULT_PATCH[d]
                try:
                    size = model_size(name, d, patch, args.in_channels, args.classes)
                    row.update(params=size["params"], gflops=round(size["flops"] / 1e9, 2), patch=size["patch"],
                               params_m=f"{size['params'] / 1e6:.2f}M", gflops_s=f"{size['flops'] / 1e9:.2f}")
                except Exception as exc:  # a model that cannot take this patch: say why, keep listing
                    row.update(params=None, gflops=None, patch=list(patch), error=str(exc).splitlines()[0][:120],
                               params_m="n/a", gflops_s="n/a")
            rows.append(row)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if not k.endswith(("_m", "_s"))} for r in rows], indent=1))
        return 0
    columns = [("name", "name"), ("family", "family"), ("dims", "dims"), ("deep sup.", "deep_supervision")]
    if not args.no_size:
        columns += [("params", "params_m"), ("GFLOPs", "gflops_s")]
        for d in sorted({r["dims"] for r in rows}):
            patch = args.patch or DEFAULT_PATCH[d]
            print(f"# {d}D: FLOPs per sample at {'x'.join(map(str, patch))}, {args.in_channels} in, {args.classes} classes")
    print(format_table(rows, columns))
    return 0

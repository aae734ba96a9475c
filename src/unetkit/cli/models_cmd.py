"""List the registered models with their tags, parameters, FLOPs and paper reference.

Parameters and FLOPs are those of each model's default configuration ("by name alone"), built on
PyTorch's meta device (no memory, no weights), for 1 input channel and 2 classes, at a default
patch of 96x96x96 (3D) / 224x224 (2D) unless --patch is given. FLOPs count matrix
multiplications, convolutions and attention (torch.utils.flop_counter, 2 FLOPs per
multiply-accumulate; GMACs = GFLOPs / 2). See docs/models.md, "Profiling".

--min-params / --max-params (millions) compare the default configuration's parameters for 1
input channel and 2 classes, whatever --patch says (a ViT's position table grows with the patch;
the filter does not). --tag may be repeated: a model must carry every tag given.

examples:
  unetkit models
  unetkit models --dims 3 --family transformer
  unetkit models --tag cnn --tag lightweight --max-params 5 --no-size
  unetkit models --tag transformer --details
  unetkit models --dims 2 --patch 512 512 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit models``."""
    parser.add_argument("--dims", type=int, choices=[2, 3], help="only models supporting 2D or 3D (default: both)")
    parser.add_argument("--family", help="only this family")
    parser.add_argument("--tag", action="append", default=[],
                        help="only models with this tag (repeatable: all must match); see docs/models.md")
    parser.add_argument("--min-params", type=float, metavar="M",
                        help="only models with at least M million parameters (default configuration)")
    parser.add_argument("--max-params", type=float, metavar="M",
                        help="only models with at most M million parameters (default configuration)")
    parser.add_argument("--patch", type=int, nargs="+", help="patch for the FLOPs (2 or 3 numbers; sets --dims)")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels (1)")
    parser.add_argument("--classes", type=int, default=2, help="output classes (2)")
    parser.add_argument("--no-size", action="store_true",
                        help="skip parameters and FLOPs (instant; a parameter range still counts parameters)")
    parser.add_argument("--details", action="store_true",
                        help="print each model's paper, printed parameter count and its setup below the table")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in a line, or None."""
    from unetkit.models import list_families
    from unetkit.models.catalog import TAGS

    if args.patch and len(args.patch) not in (2, 3):
        return f"--patch needs 2 or 3 numbers, got {args.patch}"
    if args.family and args.family not in list_families():
        return f"unknown family {args.family!r}; known: {', '.join(list_families())}"
    unknown = [t for t in args.tag if t not in TAGS]
    if unknown:
        return f"unknown tag(s) {', '.join(map(repr, unknown))}; known: {', '.join(TAGS)}"
    if args.min_params is not None and args.max_params is not None and args.min_params > args.max_params:
        return f"--min-params ({args.min_params}) is larger than --max-params ({args.max_params})"
    return None


def _in_param_range(count: int, args: argparse.Namespace) -> bool:
    millions = count / 1e6
    return ((args.min_params is None or millions >= args.min_params)
            and (args.max_params is None or millions <= args.max_params))


def _catalog_fields(name: str, dims: int) -> dict[str, Any]:
    """The row's identity and paper reference (no network built)."""
    from unetkit.models.catalog import catalog_row, format_paper_figure

    row = catalog_row(name)
    return {"name": name, "family": row.family, "dims": dims,
            "divisible_by": row.divisible_by, "tags": list(row.tags), "paper": row.paper,
            "paper_params": row.paper_params, "paper_setup": row.paper_setup,
            "tags_s": ",".join(row.tags), "paper_params_s": format_paper_figure(row.paper_params)}


def _size_fields(name: str, dims: int, args: argparse.Namespace) -> dict[str, Any]:
    """Parameters and FLOPs at the patch, or why they could not be measured."""
    from unetkit.models.profile import DEFAULT_PATCH, model_size

    patch = tuple(args.patch) if args.patch else DEFAULT_PATCH[dims]
    try:
        size = model_size(name, dims, patch, args.in_channels, args.classes)
    except Exception as exc:  # a model that cannot take this patch: say why, keep listing
        return {"params": None, "gflops": None, "patch": list(patch), "error": str(exc).splitlines()[0][:120],
                "params_m": "n/a", "gflops_s": "n/a"}
    return {"params": size["params"], "gflops": round(size["flops"] / 1e9, 2), "patch": size["patch"],
            "params_m": f"{size['params'] / 1e6:.2f}M", "gflops_s": f"{size['flops'] / 1e9:.2f}"}


def collect_rows(args: argparse.Namespace, dims_filter: int | None) -> list[dict[str, Any]]:
    """One row per (model, dimension) that passes the filters."""
    from unetkit.models import model_info
    from unetkit.models.catalog import default_parameter_count, format_count, select_models

    # --no-size stays instant unless a parameter range needs the counts (meta builds: seconds for the zoo)
    count = not args.no_size or args.min_params is not None or args.max_params is not None
    rows = []
    for name in select_models(family=args.family, spatial_dims=dims_filter, tags=args.tag):
        info = model_info(name)
        for d in info.spatial_dims:
            if dims_filter is not None and d != dims_filter:
                continue
            default_params = default_parameter_count(name, d) if count else None
            if default_params is not None and not _in_param_range(default_params, args):
                continue
            row = {**_catalog_fields(name, d), "deep_supervision": info.deep_supervision,
                   "default_params": default_params, "default_params_m": format_count(default_params)}
            if not args.no_size:
                row.update(_size_fields(name, d, args))
            rows.append(row)
    return rows


def _print_details(rows: list[dict[str, Any]]) -> None:
    """Each model's paper reference once (a model in 2D and 3D has one paper)."""
    seen: set[str] = set()
    for r in rows:
        if r["name"] in seen:
            continue
        seen.add(r["name"])
        print(f"\n{r['name']}: {r['paper']}\n  paper figure: {r['paper_params_s']} ({r['paper_setup']})")


def run(args: argparse.Namespace) -> int:
    """Print one row per (model, dimension)."""
    from unetkit.models.profile import DEFAULT_PATCH, format_table

    problem = _usage_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    dims_filter = len(args.patch) if args.patch else args.dims
    rows = collect_rows(args, dims_filter)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if not k.endswith(("_m", "_s"))} for r in rows], indent=1))
        return 0
    columns = [("name", "name"), ("family", "family"), ("dims", "dims"), ("deep sup.", "deep_supervision"),
               ("tags", "tags_s"), ("params (default)", "default_params_m")]
    if not args.no_size:
        columns += [("params", "params_m"), ("GFLOPs", "gflops_s")]
        for d in sorted({r["dims"] for r in rows}):
            patch = args.patch or DEFAULT_PATCH[d]
            print(f"# {d}D: FLOPs per sample at {'x'.join(map(str, patch))}, {args.in_channels} in, {args.classes} classes")
    columns += [("paper figure", "paper_params_s")]
    print(format_table(rows, columns))
    if args.details:
        _print_details(rows)
    return 0

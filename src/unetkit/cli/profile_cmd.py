"""Profile one model: parameters, FLOPs, forward latency (median of repeats after warm-up) and
peak memory, as a table and optionally JSON.

FLOPs: torch.utils.flop_counter on the meta device, per sample (2 FLOPs per multiply-accumulate;
matmul, convolution and attention). Latency: forward passes under torch.inference_mode (CUDA
synchronized). Peak memory: CUDA max_memory_allocated; CPU peak resident set size growth. See
docs/models.md, "Profiling".

examples:
  unetkit profile unetr --patch 96 96 96
  unetkit profile swin_unet --patch 224 224 --in-channels 3 --classes 9 --repeats 10
  unetkit profile umamba_bot --patch 40 56 40 --classes 3 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit profile``."""
    parser.add_argument("name", help="registered model name (unetkit models lists them)")
    parser.add_argument("--patch", type=int, nargs="+", help="spatial input size, 2 or 3 numbers (default 96^3 / 224^2)")
    parser.add_argument("--dims", type=int, choices=[2, 3], help="spatial dimensions (default: from --patch)")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels (1)")
    parser.add_argument("--classes", type=int, default=2, help="output classes (2)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the timed passes (1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run (cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forward passes first (2)")
    parser.add_argument("--json", metavar="OUT", help="also write the result as JSON to OUT ('-' for stdout)")


def run(args: argparse.Namespace) -> int:
    """Profile and print."""
    from unetkit.models import UnknownModelError
    from unetkit.models.profile import format_table, profile_model

    if args.patch and len(args.patch) not in (2, 3):
        print(f"error: --patch needs 2 or 3 numbers, got {args.patch}", file=sys.stderr)
        return 2
    if args.patch and args.dims and len(args.patch) != args.dims:
        print(f"error: --patch has {len(args.patch)} numbers but --dims is {args.dims}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but CUDA is not available", file=sys.stderr)
            return 1
    try:
        result = profile_model(args.name, args.dims, args.in_channels, args.classes, args.patch, args.batch,
                               args.device, args.repeats, args.warmup)
    except UnknownModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    row = {"name": result["name"], "dims": result["spatial_dims"], "patch": "x".join(map(str, result["patch"])),
           "batch": result["batch"], "device": result["device_name"], "params": f"{result['params'] / 1e6:.2f}M",
           "gflops": f"{result['gflops']:.2f}", "median": f"{result['latency_ms']['median']:.1f} ms",
           "mem": f"{result['peak_memory_mb']:.0f} MB"}
    if args.json != "-":
        print(format_table([row], [("model", "name"), ("dims", "dims"), ("patch", "patch"), ("batch", "batch"),
                                   ("device", "device"), ("params", "params"), ("GFLOPs/sample", "gflops"),
                                   ("latency (median)", "median"), ("peak memory", "mem")]))
        print(f"latency over {result['repeats']} passes after {result['warmup']} warm-up: min "
              f"{result['latency_ms']['min']:.1f} ms, max {result['latency_ms']['max']:.1f} ms; memory: "
              f"{result['methods']['memory']}")
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            from unetkit.utils.atomic import atomic_write_text

            atomic_write_text(args.json, text + "\n")
    return 0

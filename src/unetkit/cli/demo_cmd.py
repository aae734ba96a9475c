"""Run the whole pipeline on a small generated dataset: the quickest way to see unetkit work.

Steps, each printed with where its result is:
  1. generate a messy-layout 3D source (images/ and masks/NAME_mask.nii.gz, one orphan mask)
  2. unetkit import   -> a raw dataset in nnU-Net v2 layout (the orphan mask is reported)
  3. unetkit check    -> every problem at once (none expected)
  4. unetkit run      -> plan (CPU budget preset), preprocess, a short training run of the
                        3d_fullres configuration on fold 0, its validation predictions and
                        postprocessing, then prediction and evaluation of 6 held-out test cases
  5. unetkit bench    -> a two-model benchmark (plain U-Net vs Attention U-Net, same plan and
                        budget) on the same split, per-case metrics and efficiency
  6. unetkit report   -> one HTML file with the leaderboard, paired test, plots and overlays

examples:
  unetkit demo
  unetkit demo --out /tmp/unetkit_demo --iterations 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="unetkit_demo", help="folder for everything the demo writes "
                                                              "(default ./unetkit_demo; reused if present)")
    parser.add_argument("--cases", type=int, default=20, help="number of generated cases (default 20)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--iterations", type=int, default=12, help="training iterations per epoch (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for data and training")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out generated cases predicted and evaluated")
    parser.add_argument("--no-train", action="store_true", help="stop after preprocessing")
    parser.add_argument("--no-bench", action="store_true", help="skip the two-model benchmark and its report")


def _step(number: int, title: str) -> float:
    print(f"\n[{number}] {title}", flush=True)
    return time.perf_counter()


def _done(start: float, where: str) -> None:
    print(f"    done in {time.perf_counter() - start:.1f} s -> {where}", flush=True)


def run(args: argparse.Namespace) -> int:
    from unetkit.data.checks import check_dataset
    from unetkit.data.demo import demo_import_options, generate_demo_source
    from unetkit.data.importers import import_dataset
    from unetkit.utils.paths import WorkPaths

    out = Path(args.out).resolve()
    source, raw, workdir = out / "source", out / "raw" / "DemoBlobs", out / "work"
    paths = WorkPaths.for_dataset(raw, workdir)
    total = time.perf_counter()

    t = _step(1, f"generating {args.cases} demo cases (3D, 2 structures, 1 x 1 x 1.5 mm)")
    generate_demo_source(source, seed=args.seed, num_cases=args.cases, num_test_cases=args.test_cases)
    _done(t, str(source))

    t = _step(2, "importing into the nnU-Net v2 raw layout")
    report = import_dataset(source, raw, overwrite=True, **demo_import_options())
    for line in report.lines():
        print(f"    {line}")
    if report.exit_status:
        print("    the import skipped data: stopping")
        return report.exit_status
    _done(t, str(raw))

    t = _step(3, "checking the raw dataset")
    problems = check_dataset(raw)
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems:
        print(f"    {problem}")
    if errors:
        print(f"    {len(errors)} errors: stopping")
        return 1
    _done(t, f"{len(problems)} warnings, no errors")

    if args.no_train:
        from unetkit.planning import plan_dataset
        from unetkit.preprocessing import preprocess_dataset

        t = _step(4, "fingerprint, plans (CPU budget preset) and the training cache")
        plan_dataset(raw, workdir, memory_gb=None, device="cpu")
        preprocess_dataset(raw, workdir, progress=False)
        _done(t, str(paths.root))
    else:
        from unetkit.pipeline import run_pipeline

        t = _step(4, f"unetkit run: plan (CPU preset), preprocess, train 3d_fullres fold 0 for {args.epochs} x "
                     f"{args.iterations} iterations, validate, postprocess, predict and evaluate the test cases")
        result = run_pipeline(raw, workdir, configuration="3d_fullres", folds=(0,),
                              overrides={"epochs": args.epochs, "iterations_per_epoch": args.iterations,
                                         "val_iterations": 4, "seed": args.seed},
                              device="cpu", log=lambda message: print(f"    {message}", flush=True))
        _done(t, str(result.model_dir))
        per_label = ", ".join(f"{k} {v:.3f}" for k, v in result.test_dice_per_label.items())
        print(f"\ntest Dice on {result.num_predicted} held-out cases: mean {result.test_dice:.3f} ({per_label})")
        print(f"predictions: {result.predictions}\nevaluation:  {result.evaluation} (+ per_case.csv)")
        if not args.no_bench:
            _bench_and_report(out, raw, args)

    print(f"\ndemo finished in {time.perf_counter() - total:.0f} s; everything is under {out}")
    return 0


def demo_suite_text(raw: Path, iterations: int, seed: int) -> str:
    """The demo's suite file, written by the YAML library (a path with ': ' or ' #' stays one string)."""
    import yaml

    suite = {"name": "demo",
             "datasets": {"DemoBlobs": {"raw": str(raw), "configuration": "3d_fullres", "test": "imagesTs"}},
             "models": ["plain_unet", "attention_unet"],
             "budget": {"epochs": 2, "iterations_per_epoch": int(iterations), "val_iterations": 2, "batch_size": 2,
                        "num_workers": 0, "seed": int(seed), "planner": {"device": "cpu"}},
             "predict": {"mirror": False}, "efficiency": {"repeats": 3, "warmup": 1}}
    header = "# The demo's benchmark: two models under one recipe (same plan, budget and split).\n"
    return header + yaml.safe_dump(suite, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _bench_and_report(out: Path, raw: Path, args: argparse.Namespace) -> None:
    """Steps 5 and 6: a two-model `unetkit bench` on the demo split, then `unetkit report`."""
    from unetkit.benchmark.report import build_report
    from unetkit.benchmark.runner import run_benchmark

    from unetkit.utils.atomic import atomic_write_text

    suite = out / "demo_suite.yaml"
    atomic_write_text(suite, demo_suite_text(raw, max(2, args.iterations // 2), args.seed))
    results = out / "bench"
    t = _step(5, "benchmark: plain_unet vs attention_unet, same plan and budget (2 epochs each)")
    summary = run_benchmark(suite, results, log=lambda m: print(f"    {m}", flush=True),
                            command=f"unetkit bench {suite} -o {results}")
    _done(t, f"{results} ({len(summary.ran)} run(s); table.csv has one row per model and case)")
    t = _step(6, "report")
    paths = build_report(results)
    _done(t, str(paths.get("html", results / "report" / "report.html")))
    print(f"    open it in a browser: {paths.get('html', results / 'report' / 'report.html')}")

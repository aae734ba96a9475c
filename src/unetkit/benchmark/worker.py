"""One benchmark run, in its own process: train, predict the test cases, evaluate, profile.

``python -m unetkit.benchmark.worker RESULTS/runs/RUN_ID/spec.json`` is what both backends start
(the local one as a subprocess, Ray inside a task), so a crash of one run (even a segfault or
the kernel's OOM killer) ends only that process. The spec (written by the driver,
:mod:`unetkit.benchmark.runner`) says everything the run needs; the worker writes, in
``runs/RUN_ID/``: ``predictions/``, ``summary.json`` and ``per_case.csv`` (``unetkit
evaluate``), ``error.txt`` when it fails, and ``run.json`` **last** (atomically), whose
presence marks the run finished (``status`` done or failed).

A zero-shot run (``kind: zero_shot``) does not train: it predicts the target's test cases with
the source run's model (the source's plans do the preprocessing) and reuses its efficiency
numbers, which describe the same network at the same patch.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unetkit.utils.atomic import atomic_write_json, atomic_write_text, read_json


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _resolve_device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


def efficiency(spec: dict, architecture: dict, patch: list[int], num_parameters: int | None) -> dict[str, Any]:
    """Parameters, GFLOPs at the plan's patch and the median batch-1 latency on this machine."""
    from unetkit.models.profile import profile_model

    options = spec.get("efficiency") or {}
    device = _resolve_device(spec["predict"].get("device") or spec["training"].get("device"))
    prof = profile_model(architecture["name"], len(patch), architecture["in_channels"], architecture["num_classes"],
                         patch=patch, batch=1, device=device, repeats=int(options.get("repeats", 5)),
                         warmup=int(options.get("warmup", 1)), kwargs=dict(architecture.get("kwargs") or {}))
    latency = float(prof["latency_ms"]["median"]) if isinstance(prof["latency_ms"], dict) else float(prof["latency_ms"])
    params = num_parameters if num_parameters is not None else prof["params"]
    return {"params_m": params / 1e6, "gflops": prof["flops"] / 1e9, "latency_ms": latency,
            "fps": 1000.0 / latency if latency > 0 else math.nan, "patch_size": list(patch),
            "profile_device": device, "profile_params_inference": prof["params"],
            "latency_repeats": int(options.get("repeats", 5))}


def _train(spec: dict) -> tuple[Path, dict[str, Any]]:
    """Train (or finish training) the run's model; return its fold folder and training facts."""
    from unetkit.training.checkpoint import load_checkpoint
    from unetkit.training.trainer import train

    overrides = dict(spec["training"])
    overrides["arch"] = spec["arch"]
    # resume=True continues an interrupted run from checkpoint_latest (or finds it finished),
    # so a rerun after a crash does not start the training over. A model trained on cases whose
    # raw files changed since is trained again: the bench owns its work folder, and its tables
    # must describe the data as it is.
    result = train(spec["workdir"], spec["dataset"], spec["configuration"], spec["train_fold"], overrides,
                   resume=True, echo=False, on_changed_data="retrain")
    model_dir = Path(result.output_dir)
    ckpt = load_checkpoint(model_dir, "checkpoint_final", with_state=False)
    meta = ckpt.meta
    history = meta.get("history") or {}
    epoch_seconds = history.get("epoch_seconds") or []
    cfg = meta.get("training_config") or {}
    iterations = int(cfg.get("epochs", 0)) * int(cfg.get("iterations_per_epoch", 0))
    train_seconds = float(sum(epoch_seconds)) if epoch_seconds else None
    per_iteration = result.seconds_per_iteration
    if per_iteration is None and train_seconds and iterations:
        per_iteration = train_seconds / iterations
    facts = {"iterations": iterations, "train_seconds": train_seconds, "seconds_per_iteration": per_iteration,
             "architecture": meta.get("architecture") or {}, "num_parameters": meta.get("num_parameters"),
             "patch_size": list(meta.get("patch_size") or []), "training_config": cfg}
    return model_dir, facts


def _predict(spec: dict, model_dir: Path, out: Path) -> dict[str, Any]:
    from unetkit.inference import Predictor

    options = spec.get("predict") or {}
    pred_dir = out / "predictions"
    if pred_dir.exists():
        shutil.rmtree(pred_dir)  # a rerun predicts every case again: no mix of two models' outputs
    predictor = Predictor.from_model_dir(model_dir, checkpoint="final", device=options.get("device", "auto"),
                                         mirror=bool(options.get("mirror", True)),
                                         **({"step_size": float(options["step_size"])} if "step_size" in options
                                            else {}), progress=False)
    summary = predictor.predict_files(spec["test_images"], pred_dir, record=False)  # never continued
    seconds = list(summary.case_seconds.values())
    return {"prediction_dir": str(pred_dir), "num_predicted": len(summary.written),
            "predict_seconds_per_case": sum(seconds) / len(seconds) if seconds else None}


def _evaluate(spec: dict, out: Path) -> dict[str, Any]:
    from unetkit.evaluation.evaluate import evaluate_folders

    summary = evaluate_folders(out / "predictions", spec["test_labels"], spec["labels"], output_dir=out,
                               num_processes=max(1, int(spec.get("threads") or 1)))
    dice = summary["foreground_mean"].get("Dice", math.nan)
    return {"num_test_cases": summary["num_cases"], "mean_dice": dice}


def run_spec(spec: dict) -> dict[str, Any]:
    """Execute one run; returns the run.json record (also written to ``runs/RUN_ID/run.json``)."""
    out = Path(spec["output"])
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("run.json", "error.txt"):
        (out / stale).unlink(missing_ok=True)
    record: dict[str, Any] = {k: spec[k] for k in ("run_id", "kind", "model", "arch", "dataset", "source_dataset",
                                                 "configuration", "fold")}
    record.update({"status": "failed", "error": None, "started_at": now_iso(), "host": socket.gethostname(),
                   "cpu": cpu_name(), "spec": str(out / "spec.json")})
    stage = "setup"
    t0 = time.perf_counter()
    try:
        import torch

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        record["gpu"] = gpu_name()
        record["torch_threads"] = torch.get_num_threads()
        if spec["kind"] == "zero_shot":
            stage = "source"
            source = read_json(spec["source_run_json"])
            if source.get("status") != "done":
                raise RuntimeError(f"source run {source.get('run_id')} did not finish ({source.get('error')})")
            model_dir = Path(source["model_dir"])
            for key in ("iterations", "train_seconds", "seconds_per_iteration", "params_m", "gflops", "latency_ms",
                        "fps", "patch_size", "profile_device", "device"):
                record[key] = source.get(key)
            record["source_run_id"] = source["run_id"]
        else:
            stage = "train"
            model_dir, facts = _train(spec)
            record.update({k: facts[k] for k in ("iterations", "train_seconds", "seconds_per_iteration",
                                                 "patch_size")})
            record["architecture"] = facts["architecture"]
            record["device"] = _resolve_device(facts["training_config"].get("device"))
            stage = "profile"
            record.update(efficiency(spec, facts["architecture"], facts["patch_size"], facts["num_parameters"]))
        record["model_dir"] = str(model_dir)
        stage = "predict"
        record.update(_predict(spec, model_dir, out))
        stage = "evaluate"
        record.update(_evaluate(spec, out))
        record["status"] = "done"
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, KeyboardInterrupt included
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        record["error"] = f"{stage}: {type(exc).__name__}: {first}"
        record["failed_stage"] = stage
        atomic_write_text(out / "error.txt", f"run {spec['run_id']} failed during {stage}\n\n{text}")
        if isinstance(exc, KeyboardInterrupt):
            raise
    finally:
        record["seconds"] = time.perf_counter() - t0
        record["finished_at"] = now_iso()
        atomic_write_json(out / "run.json", record)  # last: marks the run finished
    return record


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m unetkit.benchmark.worker RESULTS/runs/RUN_ID/spec.json", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    record = run_spec(spec)
    print(f"{record['run_id']}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))
    return 0 if record["status"] == "done" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Killed anywhere, nothing lost: SIGKILL a command at seeded random moments, rerun it, compare.

For each of ``preprocess``, ``train``, ``predict`` and ``bench`` on a tiny generated 2D dataset:

1. run the command once without interruption (the reference) and time it;
2. for each of N moments drawn uniformly from [0, reference time] (seeded, printed): copy the
   state the command starts from, start the command, SIGKILL its whole process group at that
   moment (pool workers and benchmark workers included), run the same command again to the
   end, and compare its result with the reference:

   * preprocess: every cached array bit-identical (``.npy`` bytes, ``.npz`` arrays) and the same
     ``CASE.json`` properties;
   * train: final weights within 1e-6 of the reference (the tolerance of the resume test in
     tests/test_trainer.py; one thread everywhere, so the float sums are the same);
   * predict: identical label maps;
   * bench: ``table.csv`` identical apart from the timing columns (latency_ms, fps).

   In every case no file under a real output name may be truncated or unreadable.

Run it as a script (prints one line per kill and a summary line)::

    PYTHONPATH=src python tests/kill_harness.py --kills 10 --seed 0

``tests/test_kill_harness.py`` runs a small default in the default suite and the full one as a
slow test.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = ("preprocess", "train", "predict", "bench")
TRAIN_ARGS = ["--epochs", "3", "--iterations-per-epoch", "2", "--val-iterations", "1", "--batch-size", "2",
              "--num-workers", "0", "--deterministic", "--no-validation", "--device", "cpu", "--quiet"]
TIMING_COLUMNS = {"latency_ms", "fps"}
WEIGHT_TOLERANCE = 1e-6


@dataclass
class Outcome:
    """What one command's kills gave."""

    command: str
    moments: list[float] = field(default_factory=list)
    killed: int = 0                       # moments that came before the command had finished
    reruns: int = 0
    mismatches: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "import sys; from unetkit.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def run_to_end(args: list[str], log: Path) -> float:
    """Run a unetkit command to completion; its seconds. Raises with the log's tail on failure."""
    t0 = time.perf_counter()
    with open(log, "ab") as handle:
        code = subprocess.call(_cli(args), env=_env(), stdout=handle, stderr=subprocess.STDOUT, timeout=900)
    if code != 0:
        raise RuntimeError(f"unetkit {' '.join(args)} failed with {code}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def survivors(marker: str) -> list[int]:
    """Process ids whose command line mentions ``marker`` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def run_and_kill(args: list[str], moment: float, log: Path) -> int | None:
    """Start the command and SIGKILL its process group after ``moment`` s.

    Returns None when it was killed, else its exit status (it finished first).
    """
    with open(log, "ab") as handle:
        proc = subprocess.Popen(_cli(args), env=_env(), stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


# ----------------------------------------------------------------------------- the data

def make_base(root: Path, which: tuple[str, ...] = COMMANDS) -> dict[str, Path]:
    """Raw dataset with test images, its plan, and what ``which`` start from (cache, model, suite)."""
    from unetkit.data.synthetic import write_raw_dataset
    from unetkit.planning import plan_dataset

    raw = write_raw_dataset(root / "raw" / "KH2D", num_cases=10, ndim=2, num_classes=1, shape_range=(40, 48))
    (raw / "imagesTs").mkdir()
    for i in (7, 8, 9):
        shutil.move(raw / "imagesTr" / f"case_{i:03d}_0000.png", raw / "imagesTs" / f"case_{i:03d}_0000.png")
        (raw / "labelsTr" / f"case_{i:03d}.png").unlink()
    spec = json.loads((raw / "dataset.json").read_text())
    spec["numTraining"] = 7
    (raw / "dataset.json").write_text(json.dumps(spec))
    planned = root / "planned"
    plan_dataset(raw, planned, num_processes=1, memory_gb=None, device="cpu")
    preprocessed, trained = root / "preprocessed", root / "trained"
    if {"train", "predict"} & set(which):
        shutil.copytree(planned, preprocessed)
        run_to_end(["preprocess", str(raw), "--workdir", str(preprocessed), "-np", "1", "--no-progress"],
                   root / "setup.log")
    if "predict" in which:
        shutil.copytree(preprocessed, trained)
        run_to_end(["train", str(raw), "-c", "2d", "-f", "0", "--workdir", str(trained), *TRAIN_ARGS],
                   root / "setup.log")
    suite = root / "suite.yaml"
    suite.write_text(
        f"name: kill\ndatasets:\n  KH2D: {{raw: {json.dumps(str(raw))}, test: {{every: 3, offset: 2}}}}\n"
        "models:\n  - {name: plain_unet, kwargs: {n_stages: 4, features_per_stage: [4, 8, 16, 32]}}\n"
        "budget: {epochs: 2, iterations_per_epoch: 2, val_iterations: 1, batch_size: 2, num_workers: 0, "
        "deterministic: true, planner: {device: cpu}}\npredict: {mirror: false}\n"
        "efficiency: {repeats: 1, warmup: 0}\n", encoding="utf-8")
    return {"raw": raw, "planned": planned, "preprocessed": preprocessed, "trained": trained, "suite": suite}


# ----------------------------------------------------------------------------- per command

@dataclass
class Command:
    """How to run one command on a copy of its starting state, and how to compare results."""

    start_state: Path | None                 # copied to WORK before each run (None: empty WORK)
    args: Callable[[Path], list[str]]        # WORK -> command line
    compare: Callable[[Path, Path], list[str]]  # (reference WORK, rerun WORK) -> differences


def _real_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".tmp-") and p.name != ".unetkit.lock"
            and not any(part.startswith(".tmp-") for part in p.relative_to(folder).parts)}


def compare_cache(ref: Path, got: Path) -> list[str]:
    a, b = _real_files(ref / "KH2D" / "preprocessed"), _real_files(got / "KH2D" / "preprocessed")
    problems = [f"file sets differ: {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
    for name in sorted(set(a) & set(b)):
        if name.endswith(".npz"):
            with np.load(a[name]) as x, np.load(b[name]) as y:
                if x.files != y.files or any(not np.array_equal(x[k], y[k]) for k in x.files):
                    problems.append(f"{name}: arrays differ")
        elif name.endswith(".json"):
            if json.loads(a[name].read_text()) != json.loads(b[name].read_text()):
                problems.append(f"{name}: properties differ")
        elif a[name].read_bytes() != b[name].read_bytes():
            problems.append(f"{name}: bytes differ")
    return problems


def compare_weights(ref: Path, got: Path) -> list[str]:
    from safetensors.numpy import load_file

    fold = Path("KH2D") / "models" / "2d__plain_unet" / "fold_0" / "checkpoint_final.safetensors"
    if not (got / fold).is_file():
        return ["no checkpoint_final after the rerun"]
    wa, wb = load_file(str(ref / fold)), load_file(str(got / fold))
    if wa.keys() != wb.keys():
        return ["weight names differ"]
    worst = max(float(np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64)).max()) for k in wa)
    return [] if worst <= WEIGHT_TOLERANCE else [f"final weights differ by {worst:.3g} (> {WEIGHT_TOLERANCE})"]


def compare_predictions(ref: Path, got: Path) -> list[str]:
    from unetkit.data.io import read_label

    a = {k: v for k, v in _real_files(ref / "pred").items() if k.endswith(".png")}
    b = {k: v for k, v in _real_files(got / "pred").items() if k.endswith(".png")}
    if set(a) != set(b):
        return [f"prediction sets differ: {sorted(set(a) ^ set(b))}"]
    return [f"{k}: labels differ" for k in a if not np.array_equal(read_label(a[k])[0], read_label(b[k])[0])]


def compare_table(ref: Path, got: Path) -> list[str]:
    def rows(path: Path) -> list[dict]:
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as handle:
            return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]

    a, b = rows(ref / "results" / "table.csv"), rows(got / "results" / "table.csv")
    if not a:
        return ["the reference table is empty"]
    return [] if a == b else [f"table.csv differs ({len(a)} vs {len(b)} rows)"]


def commands(base: dict[str, Path]) -> dict[str, Command]:
    raw = str(base["raw"])
    model = lambda w: str(w / "KH2D" / "models" / "2d__plain_unet")  # noqa: E731
    return {
        "preprocess": Command(base["planned"], lambda w: ["preprocess", raw, "--workdir", str(w), "-np", "2",
                                                          "--no-progress"], compare_cache),
        "train": Command(base["preprocessed"], lambda w: ["train", raw, "-c", "2d", "-f", "0", "--workdir", str(w),
                                                          "--resume", *TRAIN_ARGS], compare_weights),
        "predict": Command(base["trained"], lambda w: ["predict", "-i", f"{raw}/imagesTs", "-o", str(w / "pred"),
                                                       "-m", model(w), "-f", "0", "--device", "cpu", "--continue",
                                                       "--no-mirror"], compare_predictions),
        "bench": Command(None, lambda w: ["bench", str(base["suite"]), "-o", str(w / "results"), "--jobs", "1",
                                          "--threads", "1"], compare_table),
    }


def _fresh(state: Path | None, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    if state is None:
        work.mkdir(parents=True)
    else:
        shutil.copytree(state, work)
    return work


def exercise(name: str, command: Command, kills: int, rng: random.Random, root: Path,
             say: Callable[[str], None]) -> Outcome:
    """Reference run, then ``kills`` kill-and-rerun rounds; returns what happened."""
    reference = _fresh(command.start_state, root / f"{name}_reference")
    seconds = run_to_end(command.args(reference), root / f"{name}.log")
    outcome = Outcome(name)
    for i in range(kills):
        moment = round(rng.uniform(0.0, seconds), 3)
        outcome.moments.append(moment)
        work = _fresh(command.start_state, root / f"{name}_kill")
        status = run_and_kill(command.args(work), moment, root / f"{name}.log")
        outcome.killed += status is None
        time.sleep(0.5)
        # Anything of the killed command still running (a worker in its own session) would go on
        # writing into the folder while the rerun works there.
        left = survivors(str(work))
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run_to_end(command.args(work), root / f"{name}.log")
        outcome.reruns += 1
        problems = command.compare(reference, work)
        if left:
            problems.append(f"{len(left)} process(es) of the killed command kept running")
        if status not in (None, 0):
            problems.append(f"the run to be killed failed by itself (exit status {status})")
        outcome.mismatches += [f"kill at {moment} s: {p}" for p in problems]
        say(f"{name}: kill {i + 1}/{kills} at {moment:.3f} s of {seconds:.1f} s "
            f"({'killed' if status is None else 'finished before the kill'}), rerun "
            f"{'matches' if not problems else 'DIFFERS: ' + '; '.join(problems)}")
    return outcome


def run_harness(root: Path, kills: int, seed: int, which: tuple[str, ...] = COMMANDS,
                say: Callable[[str], None] = print) -> list[Outcome]:
    """Build the data under ``root`` and exercise each command in ``which``."""
    rng = random.Random(seed)
    base = make_base(root / "base", which)
    table = commands(base)
    return [exercise(name, table[name], kills, rng, root, say) for name in which]


def summary_line(outcomes: list[Outcome]) -> str:
    moments = sum(len(o.moments) for o in outcomes)
    killed = sum(o.killed for o in outcomes)
    reruns = sum(o.reruns for o in outcomes)
    mismatches = sum(len(o.mismatches) for o in outcomes)
    return (f"kill harness: {moments} kills ({killed} before the command finished), {reruns} reruns, "
            f"{mismatches} mismatches ({', '.join(o.command for o in outcomes)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=3, help="kills per command (default 3; the issue asks 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one, deleted)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="unetkit-kill-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        outcomes = run_harness(root, args.kills, args.seed, tuple(args.commands), say=lambda m: print(m, flush=True))
    print(summary_line(outcomes))
    for o in outcomes:
        for m in o.mismatches:
            print(f"MISMATCH {o.command}: {m}")
    return 1 if any(o.mismatches for o in outcomes) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(SRC))
    sys.exit(main())

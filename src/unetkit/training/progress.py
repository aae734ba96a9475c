"""What a training run tells its user: progress bar, log file, progress.json and a curve plot.

- A progress bar per epoch (rich; only on a terminal and only on rank 0) with the running loss,
  the last pseudo-Dice and the ETA of the epoch and of the run.
- ``train.log``: timestamped lines, appended (one ``write`` per line, flushed), kept across
  resumes.
- ``progress.json``: the per-epoch history (losses, pseudo-Dice per class, its moving average,
  learning rate, epoch time, share of step time spent waiting for data), replaced atomically
  each epoch.
- ``progress.png``: loss and pseudo-Dice curves plus learning rate and epoch time, redrawn each
  epoch with matplotlib's Agg backend and replaced atomically.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from unetkit.utils.atomic import atomic_path, atomic_write_json

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "pseudo_dice", "mean_fg_dice", "ema_fg_dice", "lr",
                "epoch_seconds", "data_wait_share", "timestamp")


class TrainingHistory:
    """Per-epoch values of one run; EMA of the mean foreground pseudo-Dice as nnU-Net's logger."""

    def __init__(self, ema_momentum: float = 0.9, values: dict[str, list] | None = None) -> None:
        self.ema_momentum = ema_momentum
        self.values: dict[str, list] = {k: [] for k in HISTORY_KEYS}
        if values:
            for key in HISTORY_KEYS:
                self.values[key] = list(values.get(key, []))

    def __len__(self) -> int:
        return len(self.values["epoch"])

    def add(self, epoch: int, train_loss: float, val_loss: float, pseudo_dice: list[float], lr: float,
            epoch_seconds: float, data_wait_share: float) -> float:
        """Append one epoch; returns the new EMA pseudo-Dice (NaN classes ignored in the mean)."""
        finite = [d for d in pseudo_dice if d is not None and not math.isnan(d)]
        mean = float(np.mean(finite)) if finite else float("nan")
        previous = self.values["ema_fg_dice"][-1] if self.values["ema_fg_dice"] else None
        if previous is None or math.isnan(previous):
            ema = mean
        elif math.isnan(mean):
            ema = previous
        else:
            ema = self.ema_momentum * previous + (1 - self.ema_momentum) * mean
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "pseudo_dice": list(pseudo_dice),
               "mean_fg_dice": mean, "ema_fg_dice": ema, "lr": lr, "epoch_seconds": epoch_seconds,
               "data_wait_share": data_wait_share, "timestamp": time.time()}
        for key in HISTORY_KEYS:
            self.values[key].append(row[key])
        return ema

    def truncate(self, num_epochs: int) -> None:
        """Keep the first ``num_epochs`` entries (on resume: drop epochs the checkpoint does not have)."""
        for key in HISTORY_KEYS:
            self.values[key] = self.values[key][:num_epochs]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.values.items()}

    def eta_seconds(self, total_epochs: int) -> float | None:
        """Remaining time from the median of the recent epoch times."""
        times = self.values["epoch_seconds"][-10:]
        if not times:
            return None
        return float(np.median(times)) * max(0, total_epochs - len(self))


def _json_number(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return _json_number(obj)
    return obj


def write_progress_json(path: str | Path, history: TrainingHistory, extra: dict[str, Any] | None = None) -> None:
    """Replace ``progress.json`` (NaN written as null so that every JSON reader accepts it)."""
    atomic_write_json(path, _clean({**(extra or {}), "history": history.to_dict()}))


def plot_progress(path: str | Path, history: TrainingHistory, class_names: list[str] | None = None) -> None:
    """Draw ``progress.png``: losses and pseudo-Dice (top), learning rate (middle), epoch time (bottom)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    v = history.values
    if not v["epoch"]:
        return
    x = np.asarray(v["epoch"])
    fig = Figure(figsize=(10, 10), dpi=80)
    ax, ax_lr, ax_t = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1, 1]})
    ax.plot(x, v["train_loss"], color="b", label="train loss")
    ax.plot(x, v["val_loss"], color="r", label="val loss")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(x, v["mean_fg_dice"], color="g", ls=":", label="pseudo Dice")
    ax2.plot(x, v["ema_fg_dice"], color="g", lw=3, label="pseudo Dice (moving average)")
    per_class = np.asarray([[np.nan if d is None else d for d in row] for row in v["pseudo_dice"]], dtype=float)
    if per_class.ndim == 2 and per_class.shape[1] > 1:
        for k in range(per_class.shape[1]):
            name = class_names[k] if class_names and k < len(class_names) else f"class {k + 1}"
            ax2.plot(x, per_class[:, k], lw=1, alpha=0.5, label=name)
    ax2.set_ylabel("pseudo Dice")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax_lr.plot(x, v["lr"], color="k")
    ax_lr.set_ylabel("learning rate")
    ax_t.plot(x, v["epoch_seconds"], color="k")
    ax_t.set_ylabel("epoch time (s)")
    ax_t.set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


class RunLog:
    """Timestamped lines to ``train.log`` and the console; silent on ranks other than 0."""

    def __init__(self, path: str | Path | None, enabled: bool = True, echo: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = enabled
        self.echo = echo
        self._handle = None
        if enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")

    def __call__(self, *parts: Any) -> None:
        if not self.enabled:
            return
        text = " ".join(str(p) for p in parts)
        line = f"{datetime.now().strftime('%Y-%m-%d %H:%M:%S')}: {text}"
        if self._handle is not None:
            self._handle.write(line + "\n")
            self._handle.flush()
        if self.echo:
            print(text, flush=True)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def format_seconds(seconds: float | None) -> str:
    """``1h02m`` / ``3m05s`` / ``12.3s``."""
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


class EpochBar:
    """A rich progress bar for one epoch's iterations (a no-op off a terminal or off rank 0)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = None
        self._task = None

    @contextmanager
    def epoch(self, epoch: int, total_epochs: int, iterations: int, run_eta: str, dice: str) -> Iterator["EpochBar"]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                                  TextColumn("pseudo-Dice {task.fields[dice]}"), TimeElapsedColumn(),
                                  TextColumn("epoch ETA"), TimeRemainingColumn(),
                                  TextColumn("run ETA {task.fields[run_eta]}"),
                                  console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task("train", total=iterations, epoch=f"{epoch + 1}/{total_epochs}",
                                             loss="-", dice=dice, run_eta=run_eta)
        with self._progress:
            yield self
        self._progress = None

    def advance(self, loss: float | None = None) -> None:
        if self._progress is not None:
            fields = {} if loss is None else {"loss": f"{loss:.4f}"}
            self._progress.update(self._task, advance=1, **fields)

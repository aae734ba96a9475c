"""Where each stage writes: one work folder per dataset, laid out the same way every time.

Default work root is ``./unetkit_work`` (every command takes ``--workdir``); no environment
variables. For a dataset folder named ``NAME``::

    WORKDIR/NAME/fingerprint.json                 plan: what the data looks like
    WORKDIR/NAME/plans.json                       plan: what was decided (edit freely)
    WORKDIR/NAME/splits.json                      train: cross-validation folds
    WORKDIR/NAME/preprocessed/CONFIG/CASE.npy     preprocess: image (C, *spatial), float32
    WORKDIR/NAME/preprocessed/CONFIG/CASE_seg.npy preprocess: labels (1, *spatial), int16
    WORKDIR/NAME/preprocessed/CONFIG/CASE.json    preprocess: per-case properties (written last)
    WORKDIR/NAME/preprocessed/CONFIG/CASE_locations.npz  foreground voxel samples per class
    WORKDIR/NAME/models/CONFIG__ARCH/fold_F/      train: checkpoints, log, curves
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKDIR = Path("unetkit_work")


@dataclass(frozen=True)
class WorkPaths:
    root: Path  # WORKDIR/NAME

    @classmethod
    def for_dataset(cls, dataset_root: str | Path, workdir: str | Path | None = None,
                    name: str | None = None) -> "WorkPaths":
        if name:
            from unetkit.utils.names import require_name

            require_name(name, "dataset name")  # it becomes the work folder WORKDIR/NAME
        name = name or Path(dataset_root).resolve().name
        return cls(Path(workdir or DEFAULT_WORKDIR) / name)

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    def preprocessed(self, configuration: str) -> Path:
        return self.root / "preprocessed" / configuration

    def model_dir(self, configuration: str, architecture: str, fold: int | str) -> Path:
        return self.root / "models" / f"{configuration}__{architecture}" / f"fold_{fold}"

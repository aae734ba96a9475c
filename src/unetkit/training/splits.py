"""Cross-validation splits: nnU-Net v2's 5-fold split, saved once, user splits honoured.

nnU-Net v2 sorts the case names and splits them with scikit-learn's
``KFold(n_splits=5, shuffle=True, random_state=12345)``. That procedure is reproduced here
without scikit-learn: the indices ``0..n-1`` are shuffled in place by
``np.random.RandomState(12345).shuffle``; the shuffled sequence is cut into ``n_splits``
consecutive chunks, the first ``n % n_splits`` one element longer; fold ``k`` validates on chunk
``k`` and trains on the rest, both listed in the original (sorted-name) order. The same dataset
therefore gets the same folds as in nnU-Net, so results can be compared fold by fold.

``WORKDIR/NAME/splits.json`` is a list of ``{"train": [...], "val": [...]}`` (nnU-Net's
``splits_final.json`` format). It is written on first use and read as is afterwards; a file the
user wrote is honoured, with every case name checked against the cache. Fold ``"all"`` trains
and validates on every case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from unetkit.utils.atomic import atomic_write_json, read_json

DEFAULT_SEED = 12345
DEFAULT_FOLDS = 5


class SplitError(ValueError):
    """splits.json is malformed, names unknown cases, or lacks the requested fold."""


def kfold_indices(n: int, n_splits: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> list[tuple[list[int], list[int]]]:
    """``(train_indices, val_indices)`` per fold, identical to sklearn's shuffled ``KFold``."""
    if n < n_splits:
        raise SplitError(f"{n_splits}-fold cross-validation needs at least {n_splits} cases, found {n}; "
                         f"train with fold 'all' or write splits.json by hand")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    folds = []
    start = 0
    for size in sizes:
        val_mask = np.zeros(n, dtype=bool)
        val_mask[order[start:start + size]] = True
        start += size
        folds.append((np.flatnonzero(~val_mask).tolist(), np.flatnonzero(val_mask).tolist()))
    return folds


def make_splits(case_names: Sequence[str], n_splits: int = DEFAULT_FOLDS,
                seed: int = DEFAULT_SEED) -> list[dict[str, list[str]]]:
    """nnU-Net's cross-validation split of ``case_names`` (sorted first)."""
    names = sorted(case_names)
    return [{"train": [names[i] for i in tr], "val": [names[i] for i in va]}
            for tr, va in kfold_indices(len(names), n_splits, seed)]


def load_or_create_splits(path: str | Path, case_names: Sequence[str], write: bool = True) -> list[dict[str, list[str]]]:
    """Read ``path`` if it exists (checked against ``case_names``), else create and save it.

    ``write`` is false on every process but the first in distributed training; they compute the
    same split without writing.
    """
    path = Path(path)
    known = set(case_names)
    if path.is_file():
        splits = read_json(path)
        _check_splits(splits, known, path)
        return splits
    splits = make_splits(case_names)
    if write:
        atomic_write_json(path, splits)
    return splits


def _check_splits(splits: object, known: set[str], path: Path) -> None:
    if not isinstance(splits, list) or not splits:
        raise SplitError(f"{path}: expected a non-empty list of {{\"train\": [...], \"val\": [...]}} objects")
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or not isinstance(fold.get("train"), list) or not isinstance(fold.get("val"), list):
            raise SplitError(f"{path}: fold {k} must be an object with 'train' and 'val' lists of case names")
        if not fold["train"]:
            raise SplitError(f"{path}: fold {k} has no training cases")
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise SplitError(f"{path}: fold {k} names cases that are not in the preprocessed data: {shown}")


def select_fold(splits: list[dict[str, list[str]]], fold: int | str, case_names: Sequence[str],
                source: str = "splits.json") -> tuple[list[str], list[str]]:
    """``(train_cases, val_cases)`` of ``fold``; ``"all"`` trains and validates on every case."""
    if str(fold) == "all":
        names = sorted(case_names)
        return names, list(names)
    try:
        index = int(fold)
    except (TypeError, ValueError):
        raise SplitError(f"fold must be an integer or 'all', found {fold!r}") from None
    if not 0 <= index < len(splits):
        raise SplitError(f"{source} has {len(splits)} folds (0..{len(splits) - 1}); fold {index} does not exist")
    entry = splits[index]
    return list(entry["train"]), list(entry["val"])


def parse_fold(text: str) -> int | str:
    """The ``-f`` argument: a non-negative integer or ``all``."""
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    raise SplitError(f"fold must be a non-negative integer or 'all', found {text!r}")

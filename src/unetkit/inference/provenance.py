"""What each kept prediction was made from, so that a rerun never keeps one made from other data.

``--continue`` / ``skip_existing`` keeps the outputs already in a folder. Without a record, a
prediction made before the user fixed an input image, or by a model trained since, would be
kept silently. Beside the predictions lies :data:`RECORD_NAME`::

    {"model": "<signature of the weights and settings>", "cases": {"CASE": "<input signature>"}}

A case is kept only when its output exists, the model signature is the current one, and the
case's input signature is the one recorded; everything else is predicted again. The record is
written (atomically) after the run, so a killed run's newest outputs are redone next time:
costly, never wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from unetkit.data.signature import files_signature
from unetkit.utils.atomic import atomic_write_json, read_json

RECORD_NAME = ".unetkit-predicted.json"


def model_signature(weight_files: Iterable[Path], settings: object) -> str:
    """Signature of the weight files (size, mtime) and of the settings that change an output."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return files_signature(list(weight_files)) + "-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def read_record(folder: Path, model: str) -> dict[str, str]:
    """``{case: input signature}`` recorded in ``folder`` for ``model`` (empty for another model)."""
    path = Path(folder) / RECORD_NAME
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("model") != model or not isinstance(record.get("cases"), dict):
        return {}
    return {str(k): str(v) for k, v in record["cases"].items()}


def write_record(folder: Path, model: str, cases: Mapping[str, str]) -> None:
    """Record that the outputs of ``cases`` in ``folder`` were made by ``model`` from these inputs."""
    atomic_write_json(Path(folder) / RECORD_NAME, {"model": model, "cases": dict(sorted(cases.items()))})


__all__ = ["RECORD_NAME", "model_signature", "read_record", "write_record"]

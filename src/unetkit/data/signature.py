"""Signatures of the raw input files: what lets a rerun notice that the user edited their data.

A case's signature is a short hash of, for each of its files (image channels, then the label),
the file name, its size, its modification time in nanoseconds and, for files up to
:data:`CONTENT_HASH_MAX_BYTES`, a sha256 of the bytes. The stat part costs one ``stat`` per file
and catches any normal edit (an editor or a script writing the file updates its mtime); the
content part, where reading the file is cheap, also catches an edit that kept the size and
landed within the file system's timestamp granularity. Large files are judged by size and mtime
only: hashing gigabytes of images on every command would cost more than re-preprocessing.

The signature is recorded in ``fingerprint.json`` (per case), in every cache entry
(``CASE.json``), in every checkpoint and in the record beside kept predictions; each stage
compares the recorded signatures with the current ones and redoes, or refuses to reuse, what
was made from other data (:class:`SignatureDiff` names the cases).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

#: Files up to this size also get a content hash (Hippocampus-sized cases: tens of kB).
CONTENT_HASH_MAX_BYTES = 1 << 20


def file_signature(path: str | os.PathLike) -> list:
    """``[name, size, mtime_ns, sha256 or None]`` of one file (os.stat follows links)."""
    path = Path(path)
    st = os.stat(path)
    digest = None
    if st.st_size <= CONTENT_HASH_MAX_BYTES:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return [path.name, int(st.st_size), int(st.st_mtime_ns), digest]


def files_signature(paths: Iterable[str | os.PathLike]) -> str:
    """One short hash over the signatures of ``paths`` (in the given order)."""
    text = json.dumps([file_signature(p) for p in paths], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def case_signature(images: Sequence[str | os.PathLike], label: str | os.PathLike | None) -> str:
    """The signature of one case: its channel files, then its label file when it has one."""
    return files_signature([*images, *([label] if label is not None else [])])


def dataset_signatures(cases: Iterable) -> dict[str, str]:
    """``{case name: signature}`` of :class:`unetkit.data.dataset.Case` objects."""
    return {c.name: case_signature(c.images, c.label) for c in cases}


@dataclass
class SignatureDiff:
    """Which cases differ between a recorded and the current set of signatures."""

    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    @property
    def cases(self) -> list[str]:
        return sorted({*self.changed, *self.added, *self.removed})

    def describe(self, limit: int = 8) -> str:
        """``changed: a, b; added: c; removed: d`` (long lists shortened)."""
        parts = []
        for what, names in (("changed", self.changed), ("added", self.added), ("removed", self.removed)):
            if names:
                shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
                parts.append(f"{what}: {shown}")
        return "; ".join(parts) or "no change"


def compare_signatures(recorded: Mapping[str, str], current: Mapping[str, str]) -> SignatureDiff:
    """The cases whose signature differs, that are new, and that are gone."""
    return SignatureDiff(changed=sorted(k for k in recorded if k in current and recorded[k] != current[k]),
                         added=sorted(k for k in current if k not in recorded),
                         removed=sorted(k for k in recorded if k not in current))


__all__ = ["file_signature", "files_signature", "case_signature", "dataset_signatures", "SignatureDiff",
           "compare_signatures", "CONTENT_HASH_MAX_BYTES"]

"""What an import left out and why, its one-line summary and its exit status.

Every file the import did not turn into part of the dataset is a :class:`Skipped` entry with a
short ``kind`` (used to count them in the summary) and the full reason. Entries come in two sorts:

- *skips* (``counts=True``): the user's data was left out (an image without its mask, a mask
  whose values cannot be read as labels, an unreadable file, a mask file that matches no rule).
  Any of them makes the import *partial*: its exit status is non-zero and ``unetkit run`` /
  ``unetkit check`` refuse the dataset, unless the user accepted skips (``--allow-skips``).
- *listed* entries (``counts=False``): files that were never part of the data, such as a mask
  without an image (public sets ship a few), XML/CSV annotations beside the images, hidden files.

Cases left out by ``--limit`` are not skips: the user asked for them to be left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

#: Exit status of an import that left out data the user did not agree to leave out.
EXIT_PARTIAL = 3


@dataclass(frozen=True)
class Skipped:
    """A source file (or case) that was not imported.

    Attributes:
        file: the file concerned (for a case whose mask failed: the mask).
        reason: the full reason, naming what was expected and what was found.
        case: the case name when the file belongs to one.
        kind: a short category counted in the summary (``no mask``, ``mask values``, ...).
        counts: True when user data was left out (makes the import partial); False for files
            that are only listed (``orphan mask``, ``not an image``, ...).
        image: True when the entry stands for an image (a case); False for a mask or other file.
    """

    file: str
    reason: str
    case: str | None = None
    kind: str = "other"
    counts: bool = True
    image: bool = True

    def to_json(self) -> dict:
        return {"file": self.file, "case": self.case, "reason": self.reason, "kind": self.kind,
                "counts": self.counts}


def listed(file: str | Path, reason: str, kind: str, case: str | None = None) -> Skipped:
    """An entry that is shown but does not make the import partial."""
    return Skipped(str(file), reason, case, kind=kind, counts=False, image=False)


def _counted(items: list[Skipped]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(s.kind for s in items).items(),
                                                         key=lambda kv: (-kv[1], kv[0])))


@dataclass
class ImportReport:
    """What :func:`unetkit.data.importers.import_dataset` did.

    Attributes:
        output: the finished raw dataset folder.
        cases: training case names written to ``imagesTr``/``labelsTr``, sorted.
        test_cases: case names written to ``imagesTs``, sorted.
        skipped: every source file or case left out or only listed, with the reason.
        left_out_by_limit: pairs (and test images) not converted because of ``limit``.
        dataset_json: the ``dataset.json`` written (including the ``unetkit_import`` record).
        seconds: wall time of the import.
        images_found: image files found (training and test) before any was left out.
        allow_skips: the user accepted skips (``--allow-skips``).
    """

    output: Path
    cases: list[str]
    test_cases: list[str]
    skipped: list[Skipped]
    left_out_by_limit: int
    dataset_json: dict
    seconds: float
    images_found: int = 0
    allow_skips: bool = False
    details: list[str] = field(default_factory=list)
    summary_notes: list[str] = field(default_factory=list)

    @property
    def data_skips(self) -> list[Skipped]:
        """Entries that left user data out (the import is partial when there is any)."""
        return [s for s in self.skipped if s.counts]

    @property
    def partial(self) -> bool:
        return bool(self.data_skips)

    @property
    def exit_status(self) -> int:
        """0, or :data:`EXIT_PARTIAL` when data was skipped and skips were not accepted."""
        return EXIT_PARTIAL if self.partial and not self.allow_skips else 0

    def summary(self) -> str:
        """One line: images found, imported, skipped by kind, left out by --limit, only listed."""
        imported = len(self.cases) + len(self.test_cases)
        image_skips = [s for s in self.data_skips if s.image]
        other_skips = [s for s in self.data_skips if not s.image]
        line = f"{self.images_found} images found, {imported} imported, {len(image_skips)} skipped"
        if image_skips:
            line += f": {_counted(image_skips)}"
        if other_skips:
            line += f"; {len(other_skips)} mask file(s) skipped: {_counted(other_skips)}"
        if self.left_out_by_limit:
            line += f"; {self.left_out_by_limit} left out by --limit"
        for note in self.summary_notes:
            line += f"; {note}"
        only_listed = [s for s in self.skipped if not s.counts]
        if only_listed:
            line += f"; listed, not data: {_counted(only_listed)}"
        return line

    def lines(self) -> list[str]:
        """Human-readable report: the summary first, then what was written, decided and skipped."""
        spec = self.dataset_json
        rec = spec.get("unetkit_import", {})
        out = [self.summary(),
               f"imported {len(self.cases)} training case(s)"
               + (f" and {len(self.test_cases)} test case(s)" if self.test_cases else "")
               + f" into {self.output} in {self.seconds:.1f} s",
               f"channels: {spec['channel_names']}, labels: {spec['labels']}, file ending {spec['file_ending']}"]
        rule = rec.get("mask_rule")
        if rule:
            out.append(f"mask rule: {rule['description']}")
        out.extend(self.details)
        out.extend(f"note: {note}" for note in rec.get("notes", []))
        if self.skipped:
            out.append(f"skipped or listed {len(self.skipped)} file(s):")
            out.extend(f"  {s.file}: {s.reason}" + ("" if s.counts else " (listed only)") for s in self.skipped)
        else:
            out.append("skipped nothing")
        if self.partial:
            out.append(f"{len(self.data_skips)} skip(s) left data out: "
                       + ("accepted (--allow-skips)" if self.allow_skips else
                          f"exit status {EXIT_PARTIAL}; fix the files or rerun with --allow-skips to accept them"))
        return out


def partial_import_problem(spec: dict) -> str | None:
    """Why a raw dataset must not be used as it is, from its ``dataset.json``; None when fine.

    A dataset written by an import that skipped data without the user's consent (no
    ``--allow-skips``) is partial: training on it would silently train on less than the user has.
    """
    rec = spec.get("unetkit_import")
    if not isinstance(rec, dict):
        return None
    outcome = rec.get("outcome") if isinstance(rec.get("outcome"), dict) else {}
    skipped = int(outcome.get("data_skipped", 0) or 0)
    if skipped and not outcome.get("skips_accepted", False):
        return (f"the import that wrote this dataset skipped {skipped} file(s) of the source "
                f"({outcome.get('summary', '')}); fix them, or rerun `unetkit import ... --allow-skips --overwrite` "
                "to accept a dataset without them")
    return None

"""Convert the layouts people really have into a raw dataset (nnU-Net v2 layout) in one call.

The source is a folder holding an image folder and one or more mask folders, paired by file
name: ``images/NAME.ext`` with ``masks/NAME_mask.ext`` (suffixes and prefixes such as ``_mask``,
``_segmentation``, ``_manual1`` are stripped before pairing, detected when not given). Public sets
also come as class sub-folders (``benign/images`` + ``benign/mask``: one dataset, the class is
recorded per case), with a variable number of masks per image (``NAME_mask.png``,
``NAME_mask_1.png``, ...), with one mask sub-folder per label (``masks/0/NAME.png``), with
anti-aliased binary masks and with grey pictures stored as RGB; each is handled here.

Why the care: an import that guesses silently produces a dataset that trains on the wrong
labels. So every decision (threshold, value mapping, suffixes, colour) is recorded in
``dataset.json`` under ``unetkit_import``; every file left out is listed with its reason; an
import that left out data says so in its summary line and its exit status
(:attr:`ImportReport.exit_status`); and the dataset is built in a temporary folder that is
renamed into place only when complete (:func:`unetkit.utils.atomic.atomic_directory`).

The steps live in :mod:`unetkit.data.importing` (discover, pair, convert, decide the mask rule,
report); :func:`import_dataset` runs them and returns an :class:`ImportReport`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from unetkit.data.errors import DataError
from unetkit.data.importing.convert import CaseResult, ConvertTask, convert_case, restore_rgb, run_tasks
from unetkit.data.importing.discover import (DEFAULT_IMAGE_FOLDERS, DEFAULT_MASK_FOLDERS, Layout,
                                             _resolve_folder, discover_layout, refuse_nested)
from unetkit.data.importing.masks import MaskRule, decide_mask_rule, parse_label_map, parse_labels
from unetkit.data.importing.pairing import (KNOWN_MASK_PREFIXES, KNOWN_MASK_SUFFIXES, Case, pair_test,
                                            pair_training)
from unetkit.data.importing.records import EXIT_PARTIAL, ImportReport, Skipped, partial_import_problem
from unetkit.data.io import MEDICAL_ENDINGS, PICTURE_ENDINGS, file_ending
from unetkit.utils.atomic import atomic_directory, atomic_write_json

__all__ = ["import_dataset", "ImportReport", "Skipped", "MaskRule", "parse_labels", "parse_label_map",
           "partial_import_problem", "EXIT_PARTIAL", "DEFAULT_IMAGE_FOLDERS", "DEFAULT_MASK_FOLDERS",
           "KNOWN_MASK_PREFIXES", "KNOWN_MASK_SUFFIXES"]


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _check_options(source: Path, dest: Path, overwrite: bool, combine: str | None, limit: int | None,
                   color: str, rule: MaskRule) -> None:
    if not source.is_dir():
        raise DataError("source folder not found", source)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; pass --overwrite to replace it")
    if combine not in (None, "union", "labels"):
        raise ValueError(f"combine must be 'union' or 'labels', found {combine!r}")
    if color not in ("auto", "keep"):
        raise ValueError(f"color must be 'auto' or 'keep', found {color!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, found {limit}")
    if rule.label_map is not None and (rule.threshold is not None or rule.invert):
        raise ValueError("a label map cannot be combined with a threshold or inversion")


def _output_ending(cases: list[Case], where: Path) -> str:
    endings = {file_ending(c.image) for c in cases}
    if endings <= set(PICTURE_ENDINGS):
        return ".png"
    if endings <= set(MEDICAL_ENDINGS):
        return ".nii.gz"
    raise DataError(f"images mix pictures and volumes ({', '.join(sorted(endings))}); import them separately", where)


def _task(case: Case, tmp: Path, ending: str, rule: MaskRule, combine: str, color: str, test: bool) -> ConvertTask:
    if combine == "labels" and len(case.masks) == 1:
        groups = tuple((str(m),) for m in case.masks[0])  # one source: the k-th mask of the image is label k
    else:
        groups = tuple(tuple(str(m) for m in source) for source in case.masks)
    return ConvertTask(case.name, str(case.image), groups, str(tmp), ending, rule, combine, test, color)


def _settle_mask_rule(tasks: list[ConvertTask], results: list[CaseResult], rule: MaskRule) -> list[str]:
    """Decide the dataset's mask rule from every mask's kind; redo refused anti-aliased cases."""
    if rule.explicit:
        return []
    decision = decide_mask_rule([k for r in results if r.ok for k in r.mask_kinds])
    if not decision.anti_aliased:
        return []
    if decision.accept_anti_aliased:
        distinct = [d for r in results if r.ok for d in r.anti_aliased_distinct]
        return [f"{decision.anti_aliased} mask(s) had intermediate values on their edges ({min(distinct)} to "
                f"{max(distinct)} distinct values): anti-aliased binary masks, thresholded like the others"]
    for i, (task, result) in enumerate(zip(tasks, results)):
        if result.ok and "anti_aliased" in result.mask_kinds:
            results[i] = convert_case(replace(task, rule=replace(rule, accept_anti_aliased=False)))
    return [f"{decision.anti_aliased} mask(s) with intermediate values on their edges refused: {decision.reason}"]


def _settle_channels(tmp: Path, tasks: list[ConvertTask], results: list[CaseResult],
                     where: Path) -> tuple[int, list[str]]:
    """One channel layout for the dataset: grey-as-RGB pictures go back to RGB beside colour ones."""
    good = [r for r in results if r.ok]
    notes = []
    greyed = sum(r.grey_from_rgb for r in good)
    if greyed and any(r.channels == 3 for r in good):
        restored = restore_rgb(tmp, results, tasks)
        notes.append(f"{restored} RGB picture(s) with R = G = B kept as RGB: the dataset also holds colour pictures")
    elif greyed:
        notes.append(f"{greyed} RGB picture(s) have R = G = B everywhere: stored as one grey channel "
                     "(--color keep keeps three)")
    counts = {r.channels for r in good}
    if len(counts) > 1:
        by = {c: [r.name for r in good if r.channels == c][:5] for c in counts}
        raise DataError(f"images have differing channel counts: {by}; a dataset needs one channel layout", where)
    return counts.pop(), notes


def _channel_names(n_channels: int, ending: str, channel_name: str | None) -> dict[str, str]:
    if ending == ".png" and n_channels == 3:
        return {"0": "R", "1": "G", "2": "B"}
    if n_channels == 1:
        return {"0": channel_name or ("grey" if ending == ".png" else "image")}
    return {str(c): f"{channel_name or 'channel'}_{c}" for c in range(n_channels)}


def _label_names(declared: dict | None, good: list[CaseResult], sources: list[dict], combine: str,
                 max_masks: int, where: Path) -> dict[str, int]:
    found_values = sorted({v for r in good for v in r.values})
    if declared is not None:
        undeclared = [v for v in found_values if v not in declared.values()]
        if undeclared:
            cases = [r.name for r in good if set(r.values) & set(undeclared)][:5]
            raise DataError(f"label values {undeclared} found (cases {', '.join(cases)}) are not declared in "
                            f"labels {declared}", where)
        return declared
    if combine == "labels" and len(sources) > 1:
        names = {"background": 0}
        for k, src in enumerate(sources, start=1):
            folder = src.get("label_folder")
            base = (f"class_{folder}" if folder and folder.isdigit() else folder) or src["suffix"].strip("_-") \
                or src["prefix"].strip("_-") or Path(src["folder"]).name
            names[base if base not in names else f"{base}_{k}"] = k
        return names
    if combine == "labels" and max_masks > 1:
        return {"background": 0, **{f"mask_{k}": k for k in range(1, max_masks + 1)}}
    if all(r.kept == 0 for r in good):
        return {"background": 0, "foreground": 1}
    return {"background": 0, **{f"class_{v}": v for v in found_values if v != 0}}


def _mask_rule_record(good: list[CaseResult], rule: MaskRule, combine: str, n_sources: int,
                      decisions: list[str]) -> dict:
    thresholds = sorted({t for r in good for t in r.threshold_used})
    n_thr, n_kept = sum(r.thresholded for r in good), sum(r.kept for r in good)
    if rule.label_map is not None:
        desc = f"mask values mapped {dict(rule.label_map)} (other values are errors)"
    else:
        parts = []
        if n_thr:
            parts.append(f"{n_thr} mask(s) binarised: label 1 where value {'<=' if rule.invert else '>'} "
                         f"{', '.join(f'{t:g}' for t in thresholds)}" + (" (inverted)" if rule.invert else "")
                         + ("" if rule.threshold is not None else " (default threshold)"))
        if n_kept:
            parts.append(f"{n_kept} mask(s) kept their integer values as labels")
        desc = "; ".join(parts + decisions)
    if n_sources > 1:
        desc += f"; {n_sources} masks per image combined by {combine}"
    anti = sum(len(r.anti_aliased_distinct) for r in good)
    return {"description": desc, "threshold": thresholds[0] if len(thresholds) == 1 else thresholds,
            "threshold_given": rule.threshold is not None, "invert": rule.invert,
            "label_map": None if rule.label_map is None else {str(a): b for a, b in rule.label_map},
            "combine": combine, "masks_thresholded": n_thr, "masks_values_kept": n_kept,
            "masks_anti_aliased": anti}


def _unread_folder_notes(source: Path, used: set[Path]) -> list[str]:
    notes = []
    for parent in sorted({u.parent for u in used}):
        for sib in sorted(parent.iterdir()):
            if sib.is_dir() and sib.resolve() not in used and not sib.name.startswith(".") \
                    and not any(sib.resolve() in u.parents for u in used):
                shown = os.path.relpath(sib.resolve(), source.resolve())
                notes.append(f"folder {shown}/ was not read (not given as images, masks or test images)")
    return notes


def _mask_count_line(cases: list[Case]) -> str:
    counts = Counter(c.mask_count for c in cases)
    return "masks per image: " + ", ".join(f"{n} ({k} image{'s' if k != 1 else ''})" for n, k in sorted(counts.items()))


def _case_record(case: Case, source: Path) -> dict:
    def rel(p: Path) -> str:
        return os.path.relpath(p, source)
    return {"group": case.group, "image": rel(case.image), "masks": [rel(m) for ms in case.masks for m in ms]}


def _import_record(source: Path, layout: Layout, rules: dict, cases: list[Case], tasks: list[ConvertTask],
                   results: list[CaseResult], report: ImportReport, options: dict) -> dict:
    """The ``unetkit_import`` record of dataset.json (the mask rule is added by the caller)."""
    good = [r for r, t in zip(results, tasks) if r.ok and not t.test]
    labelled_test = {r.name for r, t in zip(results, tasks) if r.ok and t.test and t.mask_groups}
    used = {g.images.resolve() for g in layout.groups} | {m.resolve() for g in layout.groups for m in g.masks}
    used |= {(source / options[k]).resolve() for k in ("test_images", "test_masks") if options[k] is not None}
    written = {r.name for r in good}
    return {
        "source": str(source.resolve()), "rules": rules, "color": options["color"],
        "counts": {"training": len(good), "test": len(report.test_cases), "test_labelled": len(labelled_test),
                   "skipped": len(report.skipped), "left_out_by_limit": report.left_out_by_limit},
        "outcome": {"summary": report.summary(), "images_found": report.images_found,
                    "data_skipped": len(report.data_skips), "skips_accepted": report.allow_skips,
                    "partial": report.partial},
        "limit": options["limit"],
        "notes": _unread_folder_notes(source, used),
        # The class sub-folder of each case ("group"), so that splits can be stratified by it.
        "cases": {c.name: _case_record(c, source) for c in cases if c.name in written},
        "skipped": [s.to_json() for s in report.skipped],
    }


def _find_cases(source: Path, dest: Path, o: dict, skipped: list[Skipped]) -> tuple[Layout, dict, list, list, int]:
    """Discover and pair: (layout, rules, training cases, test cases, images found)."""
    layout = discover_layout(source, o["images"], _as_list(o["masks"]), _as_list(o["mask_suffix"]))
    test_dir = _resolve_folder(source, o["test_images"], (), "test-images") if o["test_images"] else None
    if o["test_masks"] is not None and test_dir is None:
        raise ValueError("test masks need test images (--test-images)")
    test_mask_dir = _resolve_folder(source, o["test_masks"], (), "test-masks") if o["test_masks"] else None
    inputs = [source, *(g.images for g in layout.groups), *(m for g in layout.groups for m in g.masks)]
    refuse_nested(dest, inputs + [d for d in (test_dir, test_mask_dir) if d is not None])
    pairing = pair_training(layout, image_prefix=o["image_prefix"], image_suffix=o["image_suffix"],
                            mask_prefix=o["mask_prefix"], mask_glob=o["mask_glob"])
    skipped.extend(pairing.skipped)
    if not pairing.cases:
        folders = sorted({str(m) for g in layout.groups for m in g.masks})
        raise DataError(f"no image/mask pairs found between {', '.join(str(g.images) for g in layout.groups)} and "
                        f"{', '.join(folders)}; pass --image-suffix/--mask-suffix or --mask-glob", source)
    test_cases, found = [], pairing.images_found
    if test_dir is not None:
        test_cases, test_rules, n_test = pair_test(source, test_dir, o["test_image_suffix"], test_mask_dir,
                                                   o["test_mask_suffix"], pairing.rules["image_suffix"],
                                                   pairing.rules["mask_sources"][0], skipped)
        pairing.rules.update(test_rules)
        found += n_test
    return layout, pairing.rules, pairing.cases, test_cases, found


def import_dataset(source: str | Path, dest: str | Path, *, images: str | None = None,
                   masks: str | Sequence[str] | None = None, image_suffix: str | None = None,
                   image_prefix: str | None = None, mask_suffix: str | Sequence[str] | None = None,
                   mask_prefix: str | None = None, mask_glob: str | None = None, test_images: str | None = None,
                   test_image_suffix: str | None = None, test_masks: str | None = None,
                   test_mask_suffix: str | None = None, labels: str | dict | None = None,
                   label_map: str | dict | None = None, threshold: float | None = None,
                   invert_mask: bool = False, combine: str | None = None, color: str = "auto",
                   channel_name: str | None = None, name: str | None = None, limit: int | None = None,
                   allow_skips: bool = False, num_processes: int | None = None, overwrite: bool = False,
                   progress: Callable[[int, int], None] | bool = False) -> ImportReport:
    """Convert ``source`` (image and mask folders) into a raw dataset at ``dest``.

    Args:
        source: folder holding the data in its published layout.
        dest: raw dataset folder to create (must not exist unless ``overwrite``; must not lie inside
            the source nor hold it).
        images: image folder relative to ``source``, or a pattern for class sub-folders
            (``"*/images"``: each match is a group, recorded per case). Default: the first of
            ``images``, ``image``, ... at the top, else ``*/images`` etc.
        masks: mask folder(s) relative to ``source``, with the same wildcards as ``images``;
            several give several masks per image. A mask folder holding only sub-folders
            (``masks/0``, ``masks/1``) gives one mask source per sub-folder (label k).
        image_suffix, image_prefix: stripped from image names before pairing (e.g. ``_training``).
        mask_suffix: stripped from mask names before pairing (e.g. ``_manual1``); several suffixes
            with one mask folder give several masks per image. Numbered extras of a suffix
            (``NAME_mask_1``) are further masks of the same image. Detected when not given.
        mask_prefix: stripped from mask names before pairing; detected when not given.
        mask_glob: instead of prefix/suffix rules, the masks of image ``NAME`` are the files matching
            this pattern with ``{name}`` replaced (``"{name}_mask*.png"``).
        test_images, test_image_suffix, test_masks, test_mask_suffix: test images written to
            ``imagesTs`` (their masks, converted like the training ones, to ``labelsTs``).
        labels: ``"background=0,vessel=1"`` or a dict; default from the masks.
        label_map: ``"255:1,128:2"``: mask value -> label value (unlisted non-zero values are an error).
        threshold: binarise masks: foreground is value > threshold. Default: 127 for 8-bit masks that
            are lossy (JPEG), 0/255, or 0/255 with anti-aliased edges when the whole dataset is binary.
        invert_mask: foreground is value <= threshold (ISBI 2012: 0 = membrane).
        combine: several masks per image: ``union`` (default; ``labels`` for per-label sub-folders)
            or ``labels`` (mask k becomes label k; later masks win where they overlap).
        color: ``auto`` stores RGB pictures with R = G = B everywhere as one grey channel when every
            picture is grey; ``keep`` keeps them RGB.
        channel_name: name of a single channel in ``dataset.json`` (``CT`` selects CT normalization).
        name: dataset name in ``dataset.json`` (default: ``dest``'s folder name).
        limit: convert only the first ``limit`` pairs (and test images) by sorted name.
        allow_skips: accept an import that left out data (else its exit status is non-zero and
            ``unetkit run``/``check`` refuse the dataset).
        num_processes: worker processes (default: up to 4, at most the CPU count); 1 runs inline.
        overwrite: replace an existing ``dest`` (atomically, only once the new one is complete).
        progress: True for a rich progress bar, or a callback ``(done, total)``.

    Returns:
        An :class:`ImportReport`: cases, every file skipped or listed and why, the summary line and
        the exit status.

    Raises:
        DataError: a folder is missing, source and destination are nested, no pair was found,
            images disagree on channels, labels are undeclared.
        FileExistsError: ``dest`` exists and ``overwrite`` is false.
    """
    options = dict(locals())
    t0 = time.perf_counter()
    source, dest = Path(source), Path(dest)
    declared = parse_labels(labels)
    rule = MaskRule(threshold=threshold, invert=invert_mask, label_map=parse_label_map(label_map))
    _check_options(source, dest, overwrite, combine, limit, color, rule)
    skipped: list[Skipped] = []
    layout, rules, cases, test_cases, found = _find_cases(source, dest, options, skipped)
    combine = combine or ("labels" if layout.per_label_folders else "union")
    left_out = 0
    if limit is not None:
        left_out = max(0, len(cases) - limit) + max(0, len(test_cases) - limit)
        cases, test_cases = cases[:limit], test_cases[:limit]
    ending = _output_ending(cases + test_cases, layout.groups[0].images)
    n_proc = num_processes if num_processes is not None else min(4, os.cpu_count() or 1)
    with atomic_directory(dest, overwrite=overwrite) as tmp:
        tasks = [_task(c, tmp, ending, rule, combine, color, False) for c in cases]
        tasks += [_task(c, tmp, ending, rule, combine, color, True) for c in test_cases]
        results = run_tasks(tasks, n_proc, progress)
        decisions = _settle_mask_rule(tasks, results, rule)
        skipped.extend(Skipped(r.file, r.reason, r.name, kind=r.kind) for r in results if not r.ok)
        good = [r for r, t in zip(results, tasks) if r.ok and not t.test]
        good_test = [r for r, t in zip(results, tasks) if r.ok and t.test]
        if not good:
            raise DataError(f"every case failed to convert; first problem: {skipped[-1].file}: {skipped[-1].reason}",
                            source)
        n_channels, colour_notes = _settle_channels(tmp, tasks, results, layout.groups[0].images)
        written = {r.name for r in good}
        report = ImportReport(output=dest, cases=sorted(written), test_cases=sorted(r.name for r in good_test),
                              skipped=skipped, left_out_by_limit=left_out, dataset_json={}, seconds=0.0,
                              images_found=found, allow_skips=allow_skips,
                              details=[_mask_count_line([c for c in cases if c.name in written])])
        anti_aliased = sum(len(r.anti_aliased_distinct) for r in results if r.ok)
        if anti_aliased:
            report.summary_notes.append(f"{anti_aliased} mask(s) with anti-aliased edges thresholded")
        record = _import_record(source, layout, rules, cases, tasks, results, report, options)
        record["mask_rule"] = _mask_rule_record(good, rule, combine, len(rules["mask_sources"]), decisions)
        record["notes"] = colour_notes + record["notes"]
        report.dataset_json = {
            "name": name or dest.name,
            "channel_names": _channel_names(n_channels, ending, channel_name),
            "labels": _label_names(declared, good + good_test, rules["mask_sources"], combine,
                                   max((len(t.mask_groups) for t in tasks), default=1), source),
            "numTraining": len(good), "file_ending": ending, "unetkit_import": record}
        atomic_write_json(tmp / "dataset.json", report.dataset_json)
    report.seconds = time.perf_counter() - t0
    return report

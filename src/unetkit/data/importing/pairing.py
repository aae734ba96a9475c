"""Pair images with their masks by name.

A mask belongs to an image when its name, with the mask rule's prefix and suffix stripped, is the
image's name (with the image rule's prefix and suffix stripped): ``images/NAME.png`` with
``masks/NAME_mask.png``. The rules are detected when not given: among ``""``, the known
conventions (``_mask``, ``_segmentation``, ``_manual1``, ``mask_``, ...) and a trailing token every
name shares (``_training``), the rule that pairs the most files wins.

An image may have any number of masks from one source: the base mask (``NAME_mask.png``) and
numbered extras (``NAME_mask_1.png``, ``NAME_mask_2.png``), found whenever the mask rule has a
suffix. A glob (``--mask-glob '{name}_mask*.png'``) replaces the rules for unusual names.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from unetkit.data.importing.discover import Layout, list_files
from unetkit.data.importing.records import Skipped, listed
from unetkit.data.io import strip_ending

#: Mask-name suffixes tried when ``mask_suffix`` is not given (after ``""``), in this order.
KNOWN_MASK_SUFFIXES = ("_mask", "_masks", "_segmentation", "_seg", "_label", "_labels", "_manual1",
                       "_gt", "-mask", "_Segmentation", "_mask_0000")
#: Mask-name prefixes tried when ``mask_prefix`` is not given (after ``""``).
KNOWN_MASK_PREFIXES = ("mask_", "seg_", "label_", "gt_", "mask-", "seg-", "label-")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_TRAILING_TOKEN = re.compile(r"([_-][A-Za-z0-9]+)$")
_NUMBERED_EXTRA = re.compile(r"^(.+?)[_-](\d+)$")


@dataclass(frozen=True)
class Case:
    """One image and its masks: per mask source, the base mask first, then numbered extras."""

    name: str   # unique, safe for file names
    key: str    # the paired name before making it safe
    group: str  # class sub-folder ("" without)
    image: Path
    masks: tuple[tuple[Path, ...], ...]

    @property
    def mask_count(self) -> int:
        return sum(len(m) for m in self.masks)


@dataclass
class Pairing:
    """The cases found, the rules that paired them, and what was skipped on the way."""

    cases: list[Case]
    rules: dict
    skipped: list[Skipped]
    images_found: int


def safe_name(key: str) -> str:
    return _SAFE_NAME.sub("_", key)


def common_token(stems: Iterable[str]) -> str | None:
    """The trailing ``_token`` shared by every stem (``_training`` for DRIVE), if any."""
    stems = list(stems)
    if len(stems) < 2:
        return None
    tokens = set()
    for s in stems:
        m = _TRAILING_TOKEN.search(s)
        if not m or m.start() == 0:
            return None
        tokens.add(m.group(1))
    return tokens.pop() if len(tokens) == 1 else None


def strip_affixes(stem: str, prefix: str, suffix: str) -> str | None:
    """Strip ``prefix``/``suffix`` from ``stem``; None when they are not there."""
    if prefix:
        if not stem.startswith(prefix):
            return None
        stem = stem[len(prefix):]
    if suffix:
        if not stem.endswith(suffix) or len(stem) == len(suffix):
            return None
        stem = stem[: -len(suffix)]
    return stem or None


def keyed(files: Sequence[Path], prefix: str, suffix: str,
          stems: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Group ``files`` by their name with ``prefix``/``suffix`` stripped (non-matching files left out)."""
    out: dict[str, list[Path]] = {}
    for f, stem in zip(files, stems if stems is not None else [strip_ending(f) for f in files]):
        k = strip_affixes(stem, prefix, suffix)
        if k is not None:
            out.setdefault(k, []).append(f)
    return out


def keyed_masks(files: Sequence[Path], prefix: str, suffix: str) -> dict[str, dict[int, list[Path]]]:
    """Masks by name and index: 0 for ``NAME{suffix}``, N for the numbered extra ``NAME{suffix}_N``.

    Extras are only looked for when the rule has a suffix (with none, ``case_1`` would be
    ambiguous between an image ``case_1`` and an extra mask of ``case``).
    """
    out: dict[str, dict[int, list[Path]]] = {}
    for f in files:
        stem = strip_ending(f)
        key, index = strip_affixes(stem, prefix, suffix), 0
        if key is None and suffix:
            m = _NUMBERED_EXTRA.match(stem)
            if m:
                key, index = strip_affixes(m.group(1), prefix, suffix), int(m.group(2))
        if key is not None:
            out.setdefault(key, {}).setdefault(index, []).append(f)
    return out


def choose_affixes(images: Sequence[Path], masks: Sequence[Path], image_prefix: str | None,
                   image_suffix: str | None, mask_prefix: str | None,
                   mask_suffix: str | None, same_folder: bool = False) -> tuple[str, str, str, str]:
    """Pick the prefix/suffix rules that pair the most files (ties: the least stripping).

    Given values are used as they are; missing ones are chosen among ``""``, the known
    conventions and a trailing token shared by every file name. Only affixes that occur in at
    least one name are tried, so this stays fast for thousands of files. When images and masks
    share a folder, masks need a prefix or suffix (else every file would pair with itself).
    """
    img_stems = [strip_ending(f) for f in images]
    msk_stems = [strip_ending(f) for f in masks]

    def candidates(given: str | None, known: Iterable[str], token: str | None, stems: list[str],
                   at_start: bool) -> list[str]:
        if given is not None:
            return [given]
        out = [""]
        for k in (*known, *([token] if token else [])):
            if k not in out and any(s.startswith(k) if at_start else s.endswith(k) for s in stems):
                out.append(k)
        return out

    ip = candidates(image_prefix, (), None, img_stems, True)
    is_ = candidates(image_suffix, ("_image", "_img"), common_token(img_stems), img_stems, False)
    mp = candidates(mask_prefix, KNOWN_MASK_PREFIXES, None, msk_stems, True)
    ms = candidates(mask_suffix, KNOWN_MASK_SUFFIXES, common_token(msk_stems), msk_stems, False)
    mask_keys = {(c, d): set(keyed(masks, c, d, msk_stems)) for c in mp for d in ms}
    best, best_count = (ip[0], is_[0], mp[0], ms[0]), -1
    for a in ip:
        for b in is_:
            keys_i = {k for k, v in keyed(images, a, b, img_stems).items() if len(v) == 1}
            for c in mp:
                for d in ms:
                    if same_folder and not c and not d:
                        continue
                    count = len(keys_i & mask_keys[(c, d)])
                    if count > best_count:  # strict: earlier (less stripping) wins ties
                        best, best_count = (a, b, c, d), count
    return best


# ------------------------------------------------------------------------------ training pairs

def _glob_masks(image_keys: Iterable[str], files: Sequence[Path], pattern: str) -> dict[str, dict[int, list[Path]]]:
    """Masks of each image by ``pattern`` (``{name}`` is the image's name); a file matched by two
    images is given to neither (they are reported as ambiguous)."""
    owners: dict[Path, list[str]] = {}
    for key in image_keys:
        regex = re.compile(fnmatch.translate(pattern.replace("{name}", _glob_escape(key))))
        for f in files:
            if regex.match(f.name) and strip_ending(f) != key:  # never the image itself (one folder)
                owners.setdefault(f, []).append(key)
    out: dict[str, dict[int, list[Path]]] = {}
    for f, keys in owners.items():
        for key in keys:
            index = len(out.get(key, {})) if len(keys) == 1 else -1  # -1: shared with another image
            out.setdefault(key, {}).setdefault(index, []).append(f)
    for key, found in out.items():  # order by name, base mask (shortest name) first
        if -1 not in found:
            ordered = sorted((f for fs in found.values() for f in fs), key=lambda p: (len(p.name), p.name))
            out[key] = {i: [f] for i, f in enumerate(ordered)}
    return out


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _masks_of(key: str, found: dict[int, list[Path]], source: dict, group_dir: str) -> tuple[tuple[Path, ...], str]:
    """The masks of one image from one source, ordered by index; or the reason there are none."""
    if not found:
        looked = (f"{source['prefix']}{key}{source['suffix']}.*" if "glob" not in source
                  else source["glob"].replace("{name}", key))
        return (), f"no mask found in {group_dir}/ (looked for {looked})"
    if -1 in found:
        return (), f"mask {found[-1][0].name} in {group_dir}/ matches this image and another one"
    several = {i: fs for i, fs in found.items() if len(fs) > 1}
    if several:
        fs = next(iter(several.values()))
        return (), f"{len(fs)} masks match in {group_dir}/: {', '.join(x.name for x in fs)}"
    return tuple(found[i][0] for i in sorted(found)), ""


def _list_group_files(layout: Layout, skipped: list[Skipped]) -> tuple[dict[str, list[Path]], list[dict]]:
    """Image files per group and mask files per (group, source); folders are listed once."""
    cache: dict[Path, list[Path]] = {}

    def files(folder: Path, what: str) -> list[Path]:
        real = folder.resolve()
        if real not in cache:
            cache[real] = list_files(folder, what, skipped)
        return cache[real]

    images = {g.name: files(g.images, "images") for g in layout.groups}
    masks = [{g.name: files(g.masks[k], "masks") for g in layout.groups} for k in range(len(layout.mask_sources))]
    return images, masks


def _choose_rules(layout: Layout, images: dict[str, list[Path]], masks: list[dict[str, list[Path]]],
                  image_prefix: str | None, image_suffix: str | None, mask_prefix: str | None,
                  mask_glob: str | None) -> tuple[tuple[str, str], list[dict]]:
    """The image rule and one rule per mask source, chosen on the files of all groups together."""
    pooled_images = [f for fs in images.values() for f in fs]
    chosen: tuple[str, str] | None = (image_prefix or "", image_suffix or "") if mask_glob else None
    sources = []
    for k, src in enumerate(layout.mask_sources):
        rule: dict = {"folder": src.folder}
        if src.label_folder is not None:
            rule["label_folder"] = src.label_folder
        if mask_glob:
            sources.append({**rule, "glob": mask_glob, "prefix": "", "suffix": ""})
            continue
        same = any(g.masks[k].resolve() == g.images.resolve() for g in layout.groups)
        pooled = [f for fs in masks[k].values() for f in fs]
        ip, is_, mp, ms = choose_affixes(pooled_images, pooled, image_prefix if chosen is None else chosen[0],
                                         image_suffix if chosen is None else chosen[1], mask_prefix, src.suffix,
                                         same_folder=same)
        chosen = chosen or (ip, is_)
        sources.append({**rule, "prefix": mp, "suffix": ms})
    assert chosen is not None
    return chosen, sources


def _pair_group(group, image_files: list[Path], mask_files: list[list[Path]], image_rule: tuple[str, str],
                sources: list[dict], skipped: list[Skipped]) -> tuple[list[tuple[str, Path, tuple]], int]:
    """Pair one group's images with their masks; returns (key, image, masks per source) and the image count."""
    same = [group.masks[k].resolve() == group.images.resolve() for k in range(len(sources))]
    by_source = []
    for k, src in enumerate(sources):
        if "glob" in src:
            by_source.append(_glob_masks(keyed(image_files, *image_rule), mask_files[k], src["glob"]))
        else:
            by_source.append(keyed_masks(mask_files[k], src["prefix"], src["suffix"]))
    exact = {f for found in by_source for per_index in found.values() for f in per_index.get(0, [])}
    for found in by_source:  # a file named by one source's own rule is never another source's numbered extra
        for per_index in found.values():
            for index in [i for i in per_index if i > 0]:
                per_index[index] = [f for f in per_index[index] if f not in exact]
                if not per_index[index]:
                    del per_index[index]
    mask_set = {f for found in by_source for per_index in found.values() for fs in per_index.values() for f in fs}
    if any(same):  # images and masks in one folder: files following a mask rule are masks, the rest images
        image_files = [f for f in image_files if f not in mask_set]
    image_keys = keyed(image_files, *image_rule)
    keyed_images = {f for fs in image_keys.values() for f in fs}
    for f in image_files:
        if f not in keyed_images:
            skipped.append(Skipped(str(f), f"name does not match the image rule (prefix {image_rule[0]!r}, "
                                           f"suffix {image_rule[1]!r})", kind="image name"))
    for k, files in enumerate(mask_files):
        for f in files:
            if f not in mask_set and not (same[k] and f in image_files):
                rules = ", ".join(repr(s.get("glob") or s["prefix"] + "NAME" + s["suffix"]) for s in sources)
                skipped.append(Skipped(str(f), f"name does not match any mask rule ({rules})",
                                       kind="unmatched mask", image=False))
    pairs = []
    for key in sorted(image_keys):
        files = image_keys[key]
        if len(files) > 1:
            skipped.extend(Skipped(str(f), f"{len(files)} images share the name {key!r} "
                                           f"({', '.join(x.name for x in files)})", key, kind="duplicate name")
                           for f in files)
            continue
        masks, problem = [], ""
        for k, src in enumerate(sources):
            found, problem = _masks_of(key, by_source[k].get(key, {}), src, group.masks[k].name)
            if problem:
                break
            masks.append(found)
        if problem:
            skipped.append(Skipped(str(files[0]), problem, key,
                                   kind="no mask" if problem.startswith("no mask") else "ambiguous mask"))
            continue
        pairs.append((key, files[0], tuple(masks)))
    paired = {m for _, _, ms in pairs for group_masks in ms for m in group_masks}
    for k, found in enumerate(by_source):
        for key, per_index in sorted(found.items()):
            for f in (f for fs in per_index.values() for f in fs if f not in paired):
                if key in image_keys:
                    skipped.append(listed(f, "its image was skipped (see above)", "mask of a skipped image", key))
                else:
                    img = sources[k].get("glob") and "matching image" or f"{image_rule[0]}{key}{image_rule[1]}.*"
                    skipped.append(listed(f, f"mask without image (no {img} in {group.images.name}/)",
                                          "orphan mask", key))
    return pairs, len(image_files)


def _unique_names(found: list[tuple[str, str, Path, tuple]], skipped: list[Skipped]) -> list[Case]:
    """Cases with file-safe names; a name present in several groups gets the group as a prefix."""
    groups_of: dict[str, set[str]] = {}
    for group, key, _, _ in found:
        groups_of.setdefault(safe_name(key), set()).add(group)
    cases, seen = [], {}
    for group, key, image, masks in found:
        name = safe_name(key)
        if len(groups_of[name]) > 1:
            name = safe_name(f"{group}_{key}")
        if name in seen:
            skipped.append(Skipped(str(image), f"case name {name!r} already used by {seen[name]}", key,
                                   kind="duplicate name"))
            continue
        seen[name] = str(image)
        cases.append(Case(name, key, group, image, masks))
    return sorted(cases, key=lambda c: c.name)


def pair_training(layout: Layout, *, image_prefix: str | None = None, image_suffix: str | None = None,
                  mask_prefix: str | None = None, mask_glob: str | None = None) -> Pairing:
    """Pair the images of every group with their masks by the chosen (or given) name rules."""
    skipped: list[Skipped] = []
    images, masks = _list_group_files(layout, skipped)
    image_rule, sources = _choose_rules(layout, images, masks, image_prefix, image_suffix, mask_prefix, mask_glob)
    found, images_found = [], 0
    for group in layout.groups:
        pairs, count = _pair_group(group, images[group.name], [m[group.name] for m in masks], image_rule,
                                   sources, skipped)
        images_found += count
        found.extend((group.name, key, image, ms) for key, image, ms in pairs)
    rules = {"images": layout.images_pattern, "image_prefix": image_rule[0], "image_suffix": image_rule[1],
             "mask_sources": sources}
    if len(layout.groups) > 1 or layout.groups[0].name:
        rules["groups"] = [g.name for g in layout.groups]
    return Pairing(_unique_names(found, skipped), rules, skipped, images_found)


# ------------------------------------------------------------------------------ test images

def pair_test(source: Path, test_dir: Path, test_image_suffix: str | None, test_mask_dir: Path | None,
              test_mask_suffix: str | None, image_suffix: str, first_mask_rule: dict,
              skipped: list[Skipped]) -> tuple[list[Case], dict, int]:
    """Test images (and their masks when a test mask folder is given): cases, rules, images found.

    The test images' suffix defaults to the training images' when every name has it, else to a
    trailing token they all share; the test masks' rule defaults to the first training rule.
    """
    files = list_files(test_dir, "test images", skipped)
    stems = [strip_ending(f) for f in files]
    suffix = test_image_suffix if test_image_suffix is not None else (
        image_suffix if image_suffix and all(s.endswith(image_suffix) for s in stems) else (common_token(stems) or ""))
    rules = {"test_images": str(test_dir.relative_to(source)), "test_image_suffix": suffix}
    cases: dict[str, Case] = {}
    for f, stem in zip(files, stems):
        key = strip_affixes(stem, "", suffix) or stem
        name = safe_name(key)
        if name in cases:
            skipped.append(Skipped(str(f), f"test case name {name!r} already used by {cases[name].image.name}", name,
                                   kind="duplicate name"))
            continue
        cases[name] = Case(name, key, "", f, ())
    if test_mask_dir is None:
        return sorted(cases.values(), key=lambda c: c.name), rules, len(files)
    mask_files = list_files(test_mask_dir, "test masks", skipped)
    msuffix = test_mask_suffix if test_mask_suffix is not None else first_mask_rule["suffix"]
    by_key = keyed(mask_files, first_mask_rule["prefix"] if test_mask_suffix is None else "", msuffix)
    rules.update(test_masks=str(test_mask_dir.relative_to(source)), test_mask_suffix=msuffix)
    kept = []
    for name, case in sorted(cases.items()):
        found = by_key.get(name, [])
        if len(found) != 1:
            why = "no mask" if not found else f"{len(found)} masks ({', '.join(x.name for x in found)})"
            skipped.append(Skipped(str(case.image), f"test image has {why} in {rules['test_masks']}/ (looked for "
                                                    f"{name}{msuffix}.*)", name,
                                   kind="no mask" if not found else "ambiguous mask"))
            continue
        kept.append(Case(name, case.key, "", case.image, ((found[0],),)))
    for key, fs in sorted(by_key.items()):
        if key not in cases:
            skipped.extend(listed(f, "test mask without test image", "orphan mask", key) for f in fs)
    return kept, rules, len(files)

"""Find the folders an import reads and list their files.

Layouts handled here:

- one image folder and one or more mask folders (``images/`` + ``masks/``);
- class sub-folders holding one dataset: ``CLASS/images`` + ``CLASS/mask`` for every class,
  given as a glob (``--images '*/images' --masks '*/mask'``) or found when ``images/`` is missing
  at the top. Each class folder is a *group*; the group is recorded per case;
- a mask folder split into one sub-folder per label (U-Bench's ``masks/0/NAME.png``): each
  sub-folder is a mask source, combined into one label map.

Also: :func:`refuse_nested`, which stops an import whose destination and source are nested
(one inside the other), before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from unetkit.data.errors import DataError
from unetkit.data.importing.records import Skipped, listed
from unetkit.data.io import file_ending

#: Image folder names tried when ``images`` is not given (then ``*/NAME`` for class sub-folders).
DEFAULT_IMAGE_FOLDERS = ("images", "image", "imgs", "img", "imagesTr")
#: Mask folder names tried when ``masks`` is not given.
DEFAULT_MASK_FOLDERS = ("masks", "mask", "labels", "label", "segmentations", "gt", "labelsTr")

_WILDCARD = re.compile(r"[*?]")


@dataclass(frozen=True)
class MaskSource:
    """One mask of each image: a folder (or per-group folder pattern) and its name rule.

    ``suffix`` is the suffix the user gave (None: detect it); ``label_folder`` is the
    sub-folder name when masks come split into one sub-folder per label.
    """

    folder: str
    suffix: str | None = None
    label_folder: str | None = None


@dataclass(frozen=True)
class Group:
    """One image folder and its mask folders (aligned with the layout's mask sources)."""

    name: str  # "" for a dataset without class sub-folders
    images: Path
    masks: tuple[Path, ...]


@dataclass(frozen=True)
class Layout:
    """Where the training data is: groups of folders and the mask sources they share."""

    source: Path
    groups: tuple[Group, ...]
    mask_sources: tuple[MaskSource, ...]
    images_pattern: str
    per_label_folders: bool = False


def _resolve_folder(source: Path, given: str | None, defaults: Sequence[str], what: str) -> Path:
    if given is not None:
        folder = source / given
        if not folder.is_dir():
            raise DataError(f"{what} folder {given!r} not found", folder)
        return folder
    for name in defaults:
        if (source / name).is_dir():
            return source / name
    raise DataError(f"no {what} folder given and none of {', '.join(defaults)} exists; pass --{what} PATH", source)


def _pattern_regex(pattern: str) -> re.Pattern:
    parts = re.split(r"([*?])", pattern)
    body = "".join("([^/]*)" if p == "*" else "([^/])" if p == "?" else re.escape(p) for p in parts)
    return re.compile(body + r"\Z")


def expand_pattern(source: Path, pattern: str, what: str) -> list[tuple[tuple[str, ...], Path]]:
    """Folders matching ``pattern`` (``*`` and ``?`` within one path part) with what each wildcard matched."""
    if not _WILDCARD.search(pattern):
        return [((), _resolve_folder(source, pattern, (), what))]
    if "**" in pattern or "[" in pattern:
        raise ValueError(f"{what}: only * and ? are supported in folder patterns, found {pattern!r}")
    regex = _pattern_regex(pattern.strip("/"))
    found = []
    for path in sorted(source.glob(pattern.strip("/"))):
        captures = regex.match(path.relative_to(source).as_posix())
        if path.is_dir() and captures and not any(c.startswith(".") for c in captures.groups()):
            found.append((captures.groups(), path))
    if not found:
        raise DataError(f"no {what} folder matches {pattern!r}", source)
    return found


def _fill(pattern: str, captures: tuple[str, ...], what: str, images_pattern: str) -> str:
    """``pattern`` with its wildcards replaced, in order, by what the image pattern's matched."""
    slots = _WILDCARD.findall(pattern)
    if len(slots) != len(captures):
        raise ValueError(f"{what} pattern {pattern!r} must have the same wildcards as --images {images_pattern!r} "
                         f"({len(captures)}), so that each image folder has its own mask folder")
    values = iter(captures)
    return _WILDCARD.sub(lambda _m: next(values), pattern)


def _default_images_pattern(source: Path) -> str:
    for name in DEFAULT_IMAGE_FOLDERS:
        if (source / name).is_dir():
            return name
    for name in DEFAULT_IMAGE_FOLDERS:  # class sub-folders: CLASS/images
        if any(p.is_dir() and not p.parent.name.startswith(".") for p in source.glob(f"*/{name}")):
            return f"*/{name}"
    raise DataError(f"no images folder given and none of {', '.join(DEFAULT_IMAGE_FOLDERS)} exists (nor "
                    f"CLASS/images); pass --images PATH", source)


def _default_mask_pattern(source: Path, images_pattern: str, first_images: Path) -> str:
    """The first default mask folder beside the (first) image folder, as a pattern like the images'."""
    for name in DEFAULT_MASK_FOLDERS:
        if (first_images.parent / name).is_dir():
            parent = images_pattern.rsplit("/", 1)[0] if "/" in images_pattern else ""
            return f"{parent}/{name}" if parent else name
    for name in DEFAULT_MASK_FOLDERS:
        if (source / name).is_dir() and not _WILDCARD.search(images_pattern):
            return name
    raise DataError(f"no masks folder given and none of {', '.join(DEFAULT_MASK_FOLDERS)} exists beside "
                    f"{first_images}; pass --masks PATH", source)


def _label_subfolders(folder: Path) -> list[Path] | None:
    """The per-label sub-folders of a mask folder holding only sub-folders (``masks/0``), else None."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    subs = [p for p in entries if p.is_dir()]
    if not subs or len(subs) != len(entries):
        return None
    digits = all(p.name.isdigit() for p in subs)
    return sorted(subs, key=lambda p: (int(p.name), p.name) if digits else (0, p.name))


def discover_layout(source: Path, images: str | None, masks: Sequence[str] | None,
                    suffixes: Sequence[str] | None) -> Layout:
    """Find the groups of image/mask folders and the mask sources (one per mask of an image)."""
    images_pattern = images if images is not None else _default_images_pattern(source)
    image_matches = expand_pattern(source, images_pattern, "images")
    mask_patterns = list(masks) if masks else [_default_mask_pattern(source, images_pattern, image_matches[0][1])]
    if suffixes and len(mask_patterns) > 1 and len(suffixes) not in (1, len(mask_patterns)):
        raise ValueError(f"{len(suffixes)} mask suffixes for {len(mask_patterns)} mask folders; give one, or one each")
    # Mask sources: (pattern, suffix or None = detect). One folder with several suffixes = several sources.
    if len(mask_patterns) == 1 and suffixes and len(suffixes) > 1:
        specs = [(mask_patterns[0], s) for s in suffixes]
    else:
        specs = [(p, (suffixes[i] if len(suffixes) > 1 else suffixes[0]) if suffixes else None)
                 for i, p in enumerate(mask_patterns)]
    groups: list[Group] = []
    label_names: list[str] | None = None
    for captures, image_dir in image_matches:
        folders = [_resolve_folder(source, _fill(p, captures, "--masks", images_pattern), (), "masks")
                   for p, _ in specs]
        split = [_label_subfolders(f) for f in folders] if len(folders) == 1 else [None]
        if split[0] is not None:
            names = [p.name for p in split[0]]
            if label_names is not None and names != label_names:
                raise DataError(f"label sub-folders {names} differ from the other groups' {label_names}", folders[0])
            label_names, folders = names, split[0]
        groups.append(Group("/".join(captures), image_dir, tuple(folders)))
    if label_names is not None:
        sources = tuple(MaskSource(f"{specs[0][0]}/{n}", specs[0][1], n) for n in label_names)
    else:
        sources = tuple(MaskSource(p, s) for p, s in specs)
    return Layout(source, tuple(groups), sources, images_pattern, per_label_folders=label_names is not None)


def list_files(folder: Path, what: str, skipped: list[Skipped]) -> list[Path]:
    """Image/mask files directly in ``folder``; anything else is listed (a sub-folder holding
    pictures or volumes is a skip: data that is not read)."""
    files = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            skipped.append(listed(f, "hidden file", "hidden file"))
        elif f.is_dir():
            holds_data = next((g for g in f.rglob("*") if file_ending(g) and g.is_file()), None) is not None
            if holds_data:
                skipped.append(Skipped(str(f), f"sub-folder of the {what} folder holding image files, not searched "
                                               "(give it with a folder pattern such as '*/images')",
                                       kind="sub-folder not read", image=False))
            else:
                skipped.append(listed(f, f"sub-folder of the {what} folder, not searched", "sub-folder"))
        elif not file_ending(f):
            skipped.append(listed(f, f"not an image file (in the {what} folder)", "not an image"))
        else:
            files.append(f)
    return files


def refuse_nested(dest: Path, inputs: Iterable[Path]) -> None:
    """Refuse a destination that is, contains or lies inside any folder the import reads.

    Symbolic links are resolved. An import into a folder that holds its own source would delete
    the source when ``--overwrite`` replaces the old destination; one into the source would mix
    outputs with inputs (and be read on the next import).
    """
    target = dest.resolve()
    for folder in inputs:
        real = folder.resolve()
        if real == target or target in real.parents:
            raise DataError(f"the source folder {folder} lies inside the destination {dest} (resolved: {real} in "
                            f"{target}); --overwrite would delete it. Import into a folder outside the source",
                            dest)
        if real in target.parents:
            raise DataError(f"the destination {dest} lies inside the source folder {folder} (resolved: {target} in "
                            f"{real}); write the dataset outside the source", dest)

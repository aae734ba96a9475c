"""A trained model as one archive: export, verify, install.

``export_package`` puts one trained configuration folder ``WORK/NAME/models/CONFIG__ARCH`` into a
zip with the same layout it has in a work folder::

    unetkit_package.json                              the manifest (below)
    plans.json, fingerprint.json, dataset.json
    models/CONFIG__ARCH/postprocessing.json           when `unetkit select` decided one
    models/CONFIG__ARCH/fold_F/checkpoint_X.safetensors   the weights (no training state)
    models/CONFIG__ARCH/fold_F/checkpoint_X.json          the checkpoint's metadata

The manifest names the format, the unetkit version that wrote it, the dataset and model names,
the checkpoint, the folds, and the SHA-256 and size of every other member.

``install_package`` accepts an archive only when every member is exactly what the manifest
lists, at a path of that layout, a regular file (no symlink), of a kind that cannot run code
(JSON, safetensors with a valid header; anything pickled is refused), with the listed hash. All
of this is checked before anything is written; the files are then extracted into a temporary
folder beside the destination, hashed again while written, and renamed into place
(:func:`unetkit.utils.atomic.atomic_directory`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from unetkit.data.errors import DataError
from unetkit.utils.atomic import atomic_directory, atomic_path, read_json
from unetkit.utils.names import name_problem

MANIFEST = "unetkit_package.json"
PACKAGE_FORMAT = "unetkit-model-package"
PACKAGE_VERSION = 1
#: Work-folder files a package carries (dataset.json comes from the raw dataset).
TOP_FILES = ("plans.json", "fingerprint.json", "dataset.json")
_CHECKPOINT_FILE = re.compile(r"checkpoint_(final|best)\.(json|safetensors)")
_FOLD_DIR = re.compile(r"fold_[A-Za-z0-9]+")
#: Largest member accepted (a bound on what a hostile archive can make install read).
MAX_MEMBER_BYTES = 8 << 30
#: Endings of files that are (or usually are) pickles: named in the refusal.
_PICKLE_ENDINGS = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".model", ".npy", ".npz")


class PackageError(DataError):
    """A model package that cannot be exported, or an archive that is not a valid package."""


@dataclass(frozen=True)
class InstalledPackage:
    """Where an installed package's work folder and model folder are, and its manifest."""

    work_root: Path
    model_dir: Path
    manifest: dict


# ----------------------------------------------------------------------------- export

def _package_members(model_dir: Path, checkpoint: str, folds: Sequence[str] | None,
                     dataset_json: Path | None) -> tuple[dict[str, Path], list[str]]:
    """``{archive path: source file}`` of a configuration folder, and the folds it holds."""
    if not model_dir.is_dir() or "__" not in model_dir.name or model_dir.parent.name != "models":
        raise PackageError("expected a trained configuration folder WORKDIR/NAME/models/CONFIG__ARCH", model_dir)
    work_root = model_dir.parent.parent
    plans_path = work_root / "plans.json"
    if not plans_path.is_file():
        raise PackageError("plans.json not found in the work folder of this model", work_root)
    if dataset_json is None:
        raw = read_json(plans_path).get("raw_dataset")
        dataset_json = Path(raw) / "dataset.json" if raw else work_root / "dataset.json"
    sources = {"plans.json": plans_path, "fingerprint.json": work_root / "fingerprint.json",
               "dataset.json": Path(dataset_json)}
    for name, path in sources.items():
        if not path.is_file():
            hint = " (pass --dataset-json FILE)" if name == "dataset.json" else ""
            raise PackageError(f"{name} not found{hint}", path)
    prefix = f"models/{model_dir.name}"
    postprocessing = model_dir / "postprocessing.json"
    if postprocessing.is_file():
        sources[f"{prefix}/postprocessing.json"] = postprocessing
    fold_dirs = sorted(p for p in model_dir.iterdir() if p.is_dir() and _FOLD_DIR.fullmatch(p.name))
    if folds:
        wanted = {f"fold_{f}" for f in folds}
        missing = wanted - {p.name for p in fold_dirs}
        if missing:
            raise PackageError(f"no such fold folder(s): {', '.join(sorted(missing))}", model_dir)
        fold_dirs = [p for p in fold_dirs if p.name in wanted]
    if not fold_dirs:
        raise PackageError("no fold_F folders to export", model_dir)
    for fold_dir in fold_dirs:
        for ending in ("safetensors", "json"):
            path = fold_dir / f"{checkpoint}.{ending}"
            if not path.is_file():
                raise PackageError(f"{path.name} not found (has this fold finished training? "
                                   "--checkpoint best exports the best checkpoints)", fold_dir)
            sources[f"{prefix}/{fold_dir.name}/{path.name}"] = path
    return sources, [p.name[len("fold_"):] for p in fold_dirs]


def export_package(model_dir: str | Path, destination: str | Path, *, checkpoint: str = "final",
                   folds: Sequence[str] | None = None, dataset_json: str | Path | None = None) -> dict:
    """Write the package of a trained configuration folder to ``destination`` (a .zip); returns the manifest.

    The weights are checked against their checkpoint JSON's hash first (a corrupt fold is not
    exported). The zip is written atomically.
    """
    from unetkit import __version__
    from unetkit.training.checkpoint import CheckpointError, load_checkpoint

    if checkpoint not in ("final", "best"):
        raise ValueError(f"checkpoint must be 'final' or 'best', got {checkpoint!r}")
    model_dir = Path(model_dir)
    name = f"checkpoint_{checkpoint}"
    sources, fold_names = _package_members(model_dir, name, folds,
                                           None if dataset_json is None else Path(dataset_json))
    for fold in fold_names:
        try:
            load_checkpoint(model_dir / f"fold_{fold}", name, verify=True, with_state=False)
        except CheckpointError as exc:
            raise PackageError(str(exc), model_dir / f"fold_{fold}") from exc
    files: dict[str, dict] = {}
    destination = Path(destination)
    with atomic_path(destination, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for arcname, source in sorted(sources.items()):
            files[arcname] = _copy_hashed(source, archive, arcname)  # streamed: weights may be GBs
        manifest = {"format": PACKAGE_FORMAT, "format_version": PACKAGE_VERSION, "unetkit_version": __version__,
                    "dataset": model_dir.parent.parent.name, "model": model_dir.name, "checkpoint": name,
                    "folds": fold_names, "files": files}
        archive.writestr(_member_info(MANIFEST), json.dumps(manifest, indent=2) + "\n")
    return manifest


def _copy_hashed(source: Path, archive: zipfile.ZipFile, arcname: str) -> dict:
    """Copy ``source`` into ``archive`` as ``arcname``; its SHA-256 and size as copied."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as src, archive.open(_member_info(arcname), "w", force_zip64=True) as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            dst.write(block)
    return {"sha256": digest.hexdigest(), "size": size}


def _member_info(arcname: str) -> zipfile.ZipInfo:
    # A fixed date and plain file permissions: the same model gives the same bytes.
    info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


# ----------------------------------------------------------------------------- verification

def _read_manifest(archive: zipfile.ZipFile, path: Path) -> dict:
    if MANIFEST not in archive.namelist():
        raise PackageError(f"not a unetkit model package: no {MANIFEST}", path)
    try:
        manifest = json.loads(archive.read(MANIFEST).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageError(f"{MANIFEST} is not valid JSON ({exc})", path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{MANIFEST} does not describe a {PACKAGE_FORMAT}", path)
    if manifest.get("format_version") != PACKAGE_VERSION:
        raise PackageError(f"package format version {manifest.get('format_version')!r} is not supported "
                           f"(this unetkit reads version {PACKAGE_VERSION})", path)
    for key in ("dataset", "model"):
        problem = name_problem(manifest.get(key))
        if problem is not None:
            raise PackageError(f"{MANIFEST}: {key} {manifest.get(key)!r} {problem}", path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
            for v in files.values()):
        raise PackageError(f"{MANIFEST}: 'files' must map each member to its sha256 and size", path)
    return manifest


def _layout_problem(member: str, model: str) -> str | None:
    """Why ``member`` is not a path a package may hold, or None."""
    if member.startswith("/") or "\\" in member or re.match(r"^[A-Za-z]:", member):
        return "is an absolute path or uses '\\' (it would escape the install folder)"
    parts = member.split("/")
    for part in parts:
        problem = name_problem(part)
        if problem is not None:
            return f"has a path component that {problem.replace(' (it would point outside its folder)', '')}" \
                   " (it could escape the install folder)"
    if member.lower().endswith(_PICKLE_ENDINGS):
        return "is a pickle-type file (it could run code when loaded); packages hold JSON and safetensors only"
    if len(parts) == 1 and member in TOP_FILES:
        return None
    if parts[:2] == ["models", model] and (
            (len(parts) == 3 and parts[2] == "postprocessing.json")
            or (len(parts) == 4 and _FOLD_DIR.fullmatch(parts[2]) and _CHECKPOINT_FILE.fullmatch(parts[3]))):
        return None
    return f"is not a file a model package holds (expected {', '.join(TOP_FILES)} or models/{model}/...)"


def _content_problem(member: str, data: bytes) -> str | None:
    """Why ``data`` is not a plain JSON or safetensors file, or None."""
    if data[:1] == b"\x80" or data[:2] == b"PK":
        return "is a pickle or a torch.save archive (it could run code when loaded)"
    if member.endswith(".json"):
        try:
            json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return f"is not valid JSON ({exc})"
        return None
    if len(data) < 8:
        return "is too short for a safetensors file"
    (header_length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + header_length].decode("utf-8")) if 8 + header_length <= len(data) else None
    except (UnicodeDecodeError, ValueError):
        header = None
    return None if isinstance(header, dict) else "has no valid safetensors header"


def _file_type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if info.is_dir() or (stat.S_IFMT(mode) not in (0, stat.S_IFREG)):
        return "is not a regular file"
    return None


def _check_member_info(info: zipfile.ZipInfo, manifest: dict) -> str | None:
    if info.filename == MANIFEST:
        return _file_type_problem(info)
    problem = _file_type_problem(info)
    if problem is not None:
        return problem
    if info.file_size > MAX_MEMBER_BYTES or info.file_size != manifest["files"][info.filename]["size"]:
        return f"has {info.file_size} bytes, the manifest lists {manifest['files'][info.filename]['size']}"
    return None


def verify_package(path: str | Path) -> dict:
    """Check an archive completely (see the module's description); returns its manifest.

    Raises :class:`PackageError` naming the archive, the member and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise PackageError("no such package file", path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"not a zip archive ({exc})", path) from exc
    with archive:
        manifest = _read_manifest(archive, path)
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if len(names) != len(set(names)):
            raise PackageError("the archive holds the same member name twice", path)
        for member in manifest["files"]:
            problem = _layout_problem(member, manifest["model"])
            if problem is not None:
                raise PackageError(f"member {member!r} {problem}", path)
        unlisted = sorted(set(names) - set(manifest["files"]) - {MANIFEST})
        missing = sorted(set(manifest["files"]) - set(names))
        if unlisted or missing:
            raise PackageError(f"the archive does not match its manifest: unlisted members {unlisted}, "
                               f"missing members {missing}", path)
        for info in infos:
            problem = _check_member_info(info, manifest)
            if problem is None and info.filename != MANIFEST:
                digest, head = _hash_member(archive, info, path)
                if digest != manifest["files"][info.filename]["sha256"]:
                    problem = "does not match its SHA-256 in the manifest (the file was altered or damaged)"
                else:
                    problem = _content_problem(info.filename, head)
            if problem is not None:
                raise PackageError(f"member {info.filename!r} {problem}", path)
        if not any(m.endswith(".safetensors") for m in manifest["files"]):
            raise PackageError("the package holds no weights", path)
    return manifest


#: Bytes of a member kept for the content check: all of a JSON file, a safetensors file's header.
_HEAD_BYTES = 16 << 20


def _member_blocks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> Iterator[bytes]:
    """The member's bytes in blocks; a damaged member is a :class:`PackageError`."""
    try:
        with archive.open(info) as handle:
            yield from iter(lambda: handle.read(1 << 20), b"")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise PackageError(f"member {info.filename!r} cannot be read ({exc})", path) from exc


def _hash_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[str, bytes]:
    """SHA-256 of a member and its first bytes (at most :data:`_HEAD_BYTES`)."""
    digest, head = hashlib.sha256(), bytearray()
    for block in _member_blocks(archive, info, path):
        digest.update(block)
        if len(head) < _HEAD_BYTES:
            head += block[: _HEAD_BYTES - len(head)]
    return digest.hexdigest(), bytes(head)


# ----------------------------------------------------------------------------- install

def install_package(path: str | Path, workdir: str | Path, *, overwrite: bool = False) -> InstalledPackage:
    """Verify the package at ``path`` and install it as the work folder ``WORKDIR/NAME``.

    ``NAME`` is the package's dataset name. An existing ``WORKDIR/NAME`` holding the same package
    (same manifest) is reused; another one is refused unless ``overwrite``. Nothing is written
    when the archive fails any check.
    """
    path = Path(path)
    manifest = verify_package(path)
    work_root = Path(workdir) / manifest["dataset"]
    installed = work_root / MANIFEST
    if installed.is_file() and _same_manifest(installed, manifest):
        return InstalledPackage(work_root, work_root / "models" / manifest["model"], manifest)
    if work_root.exists() and not overwrite:
        raise PackageError(f"{work_root} already exists and holds something else; pass --overwrite to replace it "
                           "or install into another work folder", path)
    with atomic_directory(work_root, overwrite=overwrite) as tmp, zipfile.ZipFile(path) as archive:
        for member, expected in manifest["files"].items():
            target = tmp / member
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(target, "wb") as out:
                for block in _member_blocks(archive, archive.getinfo(member), path):
                    digest.update(block)
                    out.write(block)
            # Hashed again: the archive may have changed since it was verified.
            if digest.hexdigest() != expected["sha256"]:
                raise PackageError(f"member {member!r} changed while being installed", path)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return InstalledPackage(work_root, work_root / "models" / manifest["model"], manifest)


def _same_manifest(installed: Path, manifest: dict) -> bool:
    try:
        return read_json(installed) == manifest
    except (OSError, ValueError):
        return False


def is_package(path: str | Path) -> bool:
    """True when ``path`` should be read as a model package: a .zip name that is not a folder.

    A missing .zip is a package too, so that the error says no such package file.
    """
    path = Path(path)
    return path.suffix.lower() == ".zip" and not path.is_dir()


@contextlib.contextmanager
def temporary_install(path: str | Path) -> Iterator[InstalledPackage]:
    """Install a package into a temporary folder for the duration of the block (for ``predict -m x.zip``)."""
    with tempfile.TemporaryDirectory(prefix="unetkit-package-") as folder:
        yield install_package(path, folder)


__all__ = ["MANIFEST", "InstalledPackage", "PackageError", "export_package", "install_package",
           "is_package", "temporary_install", "verify_package"]

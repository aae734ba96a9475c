"""Atomic file and folder writes: a reader never sees a half-written output.

Every output of unetkit is first written under a temporary name in the destination's own
folder (so the final ``os.replace`` is a rename on one file system), flushed to disk with
``fsync``, and only then renamed into place. A crash at any moment leaves either the old
file, the new file, or a stray ``.tmp-*`` file that is ignored and cleaned up later, never a
truncated output under its real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(folder: Path) -> None:
    # Persist the rename itself; not supported on every platform/file system.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    The caller writes the file at the yielded path by any means (a library's ``save``
    function, for instance). If the block raises, the temporary file is removed and
    ``destination`` is left untouched. ``suffix`` keeps the extension for writers that pick
    the format from the file name (SimpleITK, Pillow); it defaults to the destination's.
    ``durable=False`` skips the fsyncs (still atomic against a crashed or killed process, not
    against power loss): for regenerable caches of many small files, where fsync dominates.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(destination.suffixes) or ""
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX + destination.name + ".", suffix=suffix,
                                    dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the output the permissions an ordinary file would get.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, destination)
        if durable:
            _fsync_dir(destination.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(destination: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(destination: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``destination`` atomically."""
    atomic_write_bytes(destination, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples/paths into plain JSON types."""
    # Imported lazily so this module stays importable without numpy for tiny tools.
    import numpy as np

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(destination: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as human-readable JSON atomically (numpy values converted)."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False)
    atomic_write_text(destination, text + "\n")


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``destination``; rename it into place on success.

    Used for whole-dataset writes (``unetkit import``): a crash or an error leaves no
    half-finished dataset under the real name. If ``destination`` exists and ``overwrite``
    is false, :class:`FileExistsError` is raised before any work starts.
    """
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} already exists; pass overwrite to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + destination.name + ".", dir=destination.parent))
    try:
        yield tmp
        if destination.exists():
            # Move the old folder aside first so that the swap itself is two renames.
            old = destination.with_name(TMP_PREFIX + destination.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(destination, old)
            os.replace(tmp, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, destination)
        _fsync_dir(destination.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is malformed."""
    path = Path(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc

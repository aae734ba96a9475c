"""Atomic file and folder writes: a reader never sees a half-written output.

Every output of unetkit is first written under a temporary name in the destination's own
folder (so the final ``os.replace`` is a rename on one file system), flushed to disk with
``fsync``, and only then renamed into place. A crash at any moment leaves either the old
file, the new file, or a stray ``.tmp-*`` file that is ignored and cleaned up later, never a
truncated output under its real name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

TMP_PREFIX = ".tmp-"
#: Errors of a full disk or quota (and a file too large for the file system).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            # The writer's own message names the temporary file (or nothing); say which output
            # could not be written and that its previous version is untouched.
            raise OSError(exc.errno, f"could not write {destination}: {exc.strerror or exc}; its previous "
                                     "version (if any) is unchanged") from exc
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


def _swap_paths(destination: Path) -> tuple[Path, Path]:
    """The journal and the aside name of a folder replacement of ``destination``."""
    return (destination.with_name(TMP_PREFIX + destination.name + ".swap.json"),
            destination.with_name(TMP_PREFIX + destination.name + ".old"))


def recover_directory(destination: str | os.PathLike, say=None) -> str | None:
    """Finish or undo a folder replacement that a killed process left half done; say what was done.

    :func:`atomic_directory` replaces an existing folder in two renames (the old one aside, the
    new one in), with a journal naming both written before the first. A process killed between
    the renames leaves no folder under the real name; this puts one back:

    * the journal names a new folder that is still there: it was complete before the journal
      was written, so the swap is finished (the old folder moved aside if it is still in place,
      the new one moved in, the old one deleted);
    * the new folder is gone but the real name is free: the old folder is moved back
      ("restored");
    * otherwise the swap had finished: only the leftovers are removed.

    Returns the message (also passed to ``say``, default standard error), or None when there was
    nothing to recover.
    """
    destination = Path(destination).absolute()
    if not destination.name:
        return None  # the file system root is never replaced
    journal, old = _swap_paths(destination)
    message = None
    if journal.is_file():
        try:
            new = destination.with_name(str(read_json(journal)["new"]))
        except (OSError, ValueError, KeyError, TypeError):
            new = None
        if new is not None and new.is_dir() and not destination.exists():
            os.replace(new, destination)
            message = f"finished replacing {destination} (the process that replaced it was interrupted)"
        elif new is not None and new.is_dir():
            # Killed before the first rename; the new folder was complete before the journal.
            shutil.rmtree(old, ignore_errors=True)
            os.replace(destination, old)
            os.replace(new, destination)
            message = f"finished replacing {destination} (the process that replaced it was interrupted)"
        elif not destination.exists() and old.is_dir():
            os.replace(old, destination)
            message = f"restored the previous {destination} (its replacement was interrupted)"
        else:
            message = f"cleaned up after an interrupted replacement of {destination}"
        _fsync_dir(destination.parent)
        journal.unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)
    elif old.is_dir() and not destination.exists():
        # Left by a version without the journal: the old copy is all there is.
        os.replace(old, destination)
        message = f"restored the previous {destination} (its replacement was interrupted)"
    if message is not None:
        import sys

        (say or (lambda m: print(f"note: {m}", file=sys.stderr)))(message)
    return message


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``destination``; rename it into place on success.

    Used for whole-dataset writes (``unetkit import``): a crash or an error leaves no
    half-finished dataset under the real name. If ``destination`` exists and ``overwrite``
    is false, :class:`FileExistsError` is raised before any work starts. Replacing an existing
    folder takes two renames; a process killed between them is repaired by
    :func:`recover_directory`, which this function and :func:`unetkit.data.dataset.load_dataset`
    call first.
    """
    destination = Path(destination)
    recover_directory(destination)
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} already exists; pass overwrite to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + destination.name + ".", dir=destination.parent))
    try:
        yield tmp
        if destination.exists():
            _replace_directory(tmp, destination)
        else:
            os.replace(tmp, destination)
        _fsync_dir(destination.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_directory(new: Path, destination: Path) -> None:
    """Swap the complete folder ``new`` in for ``destination``: journal, two renames, clean-up."""
    journal, old = _swap_paths(destination)
    if old.exists():
        shutil.rmtree(old)
    # The journal says which folder is the finished new one, so that recover_directory can
    # complete the swap after a kill between the renames.
    atomic_write_json(journal, {"new": new.name, "old": old.name, "destination": destination.name})
    os.replace(destination, old)
    os.replace(new, destination)
    _fsync_dir(destination.parent)
    journal.unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is malformed."""
    path = Path(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc

"""One writer per folder: a lock file held for as long as a command writes there.

``plan`` and ``preprocess`` hold ``WORKDIR/NAME/.unetkit.lock`` while they write the
fingerprint, the plans and the cache; ``train`` holds ``fold_F/.unetkit.lock``. A second
process that wants the same folder stops at once with a :class:`FolderLockedError` naming the
process that holds it (its id, command and start time), instead of writing into files the first
one is writing.

The lock is an advisory ``flock`` on the file, which the kernel releases when the holding
process exits, however it exits: the lock of a process killed with SIGKILL is free at once and
the next command takes it over (and says so, because the dead holder's record is still in the
file). The record is cleared on a clean release.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from unetkit.data.errors import DataError

LOCK_NAME = ".unetkit.lock"


class FolderLockedError(DataError):
    """Another running process holds the folder's lock."""

    def __init__(self, folder: Path, holder: dict):
        self.folder = folder
        self.holder = holder
        who = f"process {holder.get('pid', '?')}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        since = holder.get("started")
        super().__init__(f"in use by {who}{f' since {since}' if since else ''}; wait until it finishes "
                         f"(two commands writing one folder would corrupt each other's files)", folder)


def _read_holder(handle) -> dict:
    handle.seek(0)
    text = handle.read()
    try:
        holder = json.loads(text) if text.strip() else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str,
                say: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block; raise :class:`FolderLockedError` if another process has it.

    Args:
        folder: the folder the block writes into (created if missing).
        command: what holds it, shown to a second process (``"unetkit preprocess"``).
        say: where the take-over note goes (default: standard error).
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(folder, _read_holder(handle)) from None
        previous = _read_holder(handle)
        if previous.get("pid") not in (None, os.getpid()) and not _pid_alive(previous.get("pid")):
            (say or (lambda m: print(m, file=sys.stderr)))(
                f"note: {folder}: taking over the lock of process {previous.get('pid')} "
                f"({previous.get('command', '?')}), which ended without releasing it")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
    finally:
        handle.close()  # closing the last descriptor releases the flock


__all__ = ["folder_lock", "FolderLockedError", "LOCK_NAME"]

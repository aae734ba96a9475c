"""Errors a user can act on: which file, which case, what was expected, what was found."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A problem with the user's data, naming the file and (when known) the case."""

    def __init__(self, message: str, path: str | Path | None = None, case: str | None = None):
        self.path = None if path is None else str(path)
        self.case = case
        self.message = message
        where = []
        if case is not None:
            where.append(f"case {case!r}")
        if self.path is not None:
            where.append(self.path)
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class DatasetJsonError(DataError):
    """``dataset.json`` is missing, malformed or inconsistent."""

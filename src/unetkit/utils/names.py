"""The one rule for names that become a file or folder name.

Case names (dataset.json's explicit ``"dataset"`` keys), ``data_identifier`` in plans.json,
benchmark dataset names and model labels all end up as one component of a path
(``preprocessed/IDENT/CASE.npy``, ``runs/DATASET__LABEL__FOLD``). A name that is not a single
plain component would write outside the folder the command was given (``../../x``), into
another folder (``a/b``), or at an absolute path. The rule, checked where each name is read:

* not empty, at most :data:`MAX_NAME_LENGTH` characters;
* no ``/`` or ``\\`` (a separator on some system), no control characters (newline, NUL, ...);
* not ``.`` or ``..``, and not starting with ``..`` nor with ``.tmp-`` (unetkit's temporary
  files, which a cleanup would delete).
"""

from __future__ import annotations

from pathlib import Path

from unetkit.data.errors import DataError

#: Most file systems allow 255 bytes per component; suffixes such as ``_locations.npz`` need room.
MAX_NAME_LENGTH = 200


def name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a single path component, or None when it is fine."""
    if not isinstance(name, str):
        return f"must be a string, found {type(name).__name__}"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\')"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "contains a control character"
    if name in (".", "..") or name.startswith(".."):
        return "is or starts with '..' (it would point outside its folder)"
    if name.startswith(".tmp-"):
        return "starts with '.tmp-' (reserved for unetkit's temporary files)"
    return None


def require_name(name: object, what: str, path: str | Path | None = None,
                 error: type[DataError] = DataError) -> str:
    """``name`` when it is a safe path component; else a :class:`DataError` naming file and key.

    Args:
        what: which name it is, as the user would find it (``dataset.json key "dataset"."../x"``).
        path: the file the name was read from.
        error: the exception class (a :class:`DataError` subclass: ``DatasetJsonError``, ``PlansError``).
    """
    problem = name_problem(name)
    if problem is not None:
        raise error(f"{what} {name!r} {problem}; it becomes a file or folder name, so it must be one "
                        "plain name (letters, digits, '-', '_', '.')", path)
    return name  # type: ignore[return-value]


def check_data_identifier(entry: dict, configuration: str, plans_path: str | Path | None = None) -> str:
    """The configuration's ``data_identifier`` (default: its name), checked as a folder name."""
    ident = entry.get("data_identifier") or configuration
    return require_name(ident, f"configurations.{configuration}.data_identifier", plans_path)


__all__ = ["name_problem", "require_name", "check_data_identifier", "MAX_NAME_LENGTH"]
